//! The store: its JetStream streams, how it connects and sets them up, and the es-core traits it
//! implements by delegating to the modules that do the work.

use std::sync::Arc;

use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType, Stream};
use async_nats::jetstream::{self, Context};
use async_trait::async_trait;
use es_core::EventStream;
use es_core::{
    AppendOutcome, EventStore, ExpectedVersion, Limits, NewEvent, RecordedEvent, Snapshot, SnapshotStore, StoreResult,
    StreamId, StreamSlice,
};
use uuid::Uuid;

use crate::codec::{partition_of, stream_tokens, EVENT_OVERHEAD, MAX_BATCH_EVENTS};
use crate::error::NatsError;
use crate::options::NatsOptions;

/// Room left in a message for its headers (message id, expected sequence, version).
const HEADER_ROOM: usize = 8 << 10;

/// An event store on NATS JetStream. Cheap to clone: clones share one connection.
///
/// See the [crate documentation](crate) for the layout and the guarantees.
#[derive(Clone)]
pub struct NatsStore {
    pub(crate) inner: Arc<Inner>,
}

/// What the clones of a store share.
pub(crate) struct Inner {
    pub(crate) context: Context,
    pub(crate) options: NatsOptions,
    pub(crate) limits: Limits,
    /// The JetStream stream of each partition, by partition number.
    pub(crate) partitions: Vec<Stream>,
    /// The event-id index: one subject per event id, holding where the event is.
    pub(crate) index: Stream,
    /// The latest snapshot of each stream: one subject per stream.
    pub(crate) snapshots: Stream,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl NatsStore {
    /// Connects to the NATS server(s) at `url` (a comma-separated list of `host:port` or
    /// `nats://` addresses: give every node of a cluster) and sets the store up as `options`
    /// says (see [`NatsStore::new`]).
    pub async fn connect(url: &str, options: NatsOptions) -> Result<Self, NatsError> {
        options.validate()?;
        let servers: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|server| !server.is_empty())
            .collect();
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(options.request_timeout))
            .ping_interval(options.ping_interval)
            .connect(servers.as_slice())
            .await
            .map_err(|error| NatsError::Connect {
                url: url.to_owned(),
                reason: error.to_string(),
            })?;
        Self::new(client, options).await
    }

    /// A store on an existing connection. Creates the JetStream streams it needs when they do
    /// not exist (an existing stream is used as it is): safe to run from every process.
    pub async fn new(client: async_nats::Client, options: NatsOptions) -> Result<Self, NatsError> {
        options.validate()?;
        let limits = options.limits.capped_by(ceiling(client.server_info().max_payload));
        let context = jetstream::ContextBuilder::new()
            .timeout(options.request_timeout)
            .build(client);
        let prefix = options.prefix.clone();
        let mut partitions = Vec::with_capacity(options.partitions as usize);
        for partition in 0..options.partitions {
            let config = Config {
                name: format!("{prefix}_events_{partition}"),
                subjects: vec![format!("{prefix}.e.{partition}.>")],
                duplicate_window: options.duplicate_window,
                ..base_config(&options)
            };
            partitions.push(setup(&context, config).await?);
        }
        let index = setup(&context, bucket(&options, &bucket_name(&prefix, "event_ids"))).await?;
        let snapshots = setup(&context, bucket(&options, &bucket_name(&prefix, "snapshots"))).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                context,
                options,
                limits,
                partitions,
                index,
                snapshots,
            }),
        })
    }

    /// How many partitions the store has.
    pub fn partition_count(&self) -> u32 {
        self.inner.options.partitions
    }

    /// The partition that holds `stream`: a stable hash of its aggregate id (FNV-1a, 64 bits)
    /// modulo the partition count.
    pub fn partition_of(&self, stream: &StreamId) -> u32 {
        partition_of(stream, self.inner.options.partitions)
    }

    /// The options the store was set up with.
    pub fn options(&self) -> &NatsOptions {
        &self.inner.options
    }

    /// The JetStream stream of `partition` (there is one, since partitions come from the
    /// store's own count).
    pub(crate) fn partition_stream(&self, partition: u32) -> Option<&Stream> {
        self.inner.partitions.get(partition as usize)
    }

    /// The subject of `stream`'s events.
    pub(crate) fn event_subject(&self, stream: &StreamId) -> String {
        format!(
            "{}.e.{}.{}",
            self.inner.options.prefix,
            self.partition_of(stream),
            stream_tokens(stream)
        )
    }

    /// The subject filter of every event of `partition`.
    pub(crate) fn partition_filter(&self, partition: u32) -> String {
        format!("{}.e.{partition}.>", self.inner.options.prefix)
    }

    /// The index subject of event `event_id`.
    pub(crate) fn index_subject(&self, event_id: Uuid) -> String {
        format!(
            "$KV.{}.{}",
            bucket_name(&self.inner.options.prefix, "event_ids"),
            event_id.simple()
        )
    }

    /// The subject of `stream`'s snapshot.
    pub(crate) fn snapshot_subject(&self, stream: &StreamId) -> String {
        format!(
            "$KV.{}.{}",
            bucket_name(&self.inner.options.prefix, "snapshots"),
            stream_tokens(stream)
        )
    }

    /// The subject filter of every snapshot.
    pub(crate) fn snapshot_filter(&self) -> String {
        format!("$KV.{}.>", bucket_name(&self.inner.options.prefix, "snapshots"))
    }
}

/// The limits one message of `max_payload` bytes can carry: the batch's events, their
/// [`EVENT_OVERHEAD`] each and the headers. At most [`MAX_BATCH_EVENTS`] events, so that the
/// index of an event fits its position.
fn ceiling(max_payload: usize) -> Limits {
    let room = max_payload.saturating_sub(HEADER_ROOM);
    // At most half the room goes to per-event overhead; the rest to names, payloads, metadata.
    let events = MAX_BATCH_EVENTS.min(room / 2 / (EVENT_OVERHEAD + 4)).max(1);
    let bytes = room.saturating_sub(events * EVENT_OVERHEAD);
    Limits::UNLIMITED
        .with_max_batch_events(events)
        .with_max_batch_bytes(bytes)
        // One event at its largest still leaves room for others in its batch.
        .with_max_payload_bytes(bytes / 2)
        .with_max_metadata_bytes(bytes / 4)
        // A stream id goes into subjects, base64-encoded (4/3 of it) with the store's prefix:
        // past about 3,000 bytes a subject outgrows the server's control line (4 KiB by
        // default), and the server drops the message unanswered.
        .with_max_stream_id_bytes(MAX_STREAM_ID_BYTES)
}

/// The longest stream id a NATS store takes (as PostgreSQL's): see [`ceiling`].
const MAX_STREAM_ID_BYTES: usize = 2048;

/// What every stream of the store shares: file storage, the replicas asked for, nothing ever
/// discarded by a limit (no age, size or count limit on events).
fn base_config(options: &NatsOptions) -> Config {
    Config {
        storage: StorageType::File,
        num_replicas: options.replicas,
        discard: DiscardPolicy::Old,
        ..Config::default()
    }
}

/// The name of the store's key-value bucket `kind`: `<prefix>_<kind>`.
pub(crate) fn bucket_name(prefix: &str, kind: &str) -> String {
    format!("{prefix}_{kind}")
}

/// A JetStream key-value bucket as NATS defines it (stream `KV_<bucket>`, subjects
/// `$KV.<bucket>.<key>`, one message per key, roll-ups allowed, deletes refused), so that NATS's
/// own tools (`nats kv`) can list and read it. The store reads it with "get message" requests
/// answered by the stream's leader, not with the key-value API's direct gets, which any replica
/// may answer from behind.
pub(crate) fn bucket(options: &NatsOptions, name: &str) -> Config {
    Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        ..base_config(options)
    }
}

/// Creates the stream `config` describes unless one of that name exists.
async fn setup(context: &Context, config: Config) -> Result<Stream, NatsError> {
    let name = config.name.clone();
    context.get_or_create_stream(config).await.map_err(|error| {
        use async_nats::jetstream::context::CreateStreamErrorKind;
        match error.kind() {
            // No answer (a cluster electing a leader, JetStream not up yet): try again later.
            CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable => {
                NatsError::request("set up the store's streams", format!("{name}: {error}"), true)
            }
            _ => NatsError::Setup {
                stream: name,
                reason: error.to_string(),
            },
        }
    })
}

#[async_trait]
impl EventStore for NatsStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendOutcome> {
        crate::append::append(self, stream, expected, events).await
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    fn read_stream<'a>(&'a self, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a> {
        crate::read::read_stream(self, stream, slice)
    }

    async fn read_event(&self, event_id: Uuid) -> StoreResult<Option<RecordedEvent>> {
        crate::read::read_event(self, event_id).await
    }

    async fn stream_version(&self, stream: &StreamId) -> StoreResult<u64> {
        Ok(crate::read::head(self, stream).await?.version)
    }
}

#[async_trait]
impl SnapshotStore for NatsStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> StoreResult<()> {
        crate::snapshot::save(self, snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> StoreResult<Option<Snapshot>> {
        crate::snapshot::load(self, stream).await
    }
}
