//! A NATS JetStream event store for `es-core`, for when one PostgreSQL server is no longer
//! enough: streams spread over partitions, each a JetStream stream replicated by Raft.
//!
//! [`NatsStore`] implements [`EventStore`](es_core::EventStore),
//! [`SnapshotStore`](es_core::SnapshotStore) and [`StreamCatalog`](es_core::StreamCatalog);
//! each partition's [`PartitionLog`] implements [`GlobalLog`](es_core::GlobalLog) (and the store
//! itself does when it has a single partition). The es-core conformance suite runs against it
//! on one server and on a three-node cluster. Written for nats-server 2.9 (Debian's) and later.
//!
//! ```no_run
//! use es_core::{EventStore, ExpectedVersion, GlobalLog, Metadata, NewEvent, StreamId};
//! use es_nats::{NatsOptions, NatsStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let options = NatsOptions::new().prefix("shop").partitions(4).replicas(3);
//! let store = NatsStore::connect("127.0.0.1:4222,127.0.0.1:4223,127.0.0.1:4224", options).await?;
//! let stream = StreamId::new("ticket", "T-1");
//! let event = NewEvent {
//!     event_id: uuid::Uuid::now_v7(),
//!     event_name: "TicketOpened".into(),
//!     schema_version: 1,
//!     payload: br#"{"title":"Printer on fire"}"#.to_vec(),
//!     metadata: Metadata::new(),
//! };
//! store.append(&stream, ExpectedVersion::NoStream, vec![event]).await?;
//! // Each partition has its own log: one projection runner per partition.
//! let log = store.partition_log(store.partition_of(&stream)).ok_or("no such partition")?;
//! let page = log.read_all(0, 500).await?;
//! assert_eq!(page.len(), 1);
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! ## Layout
//!
//! With prefix `P` (default `es`), the store keeps these JetStream streams (file storage, the
//! replicas asked for, no limits that would discard an event):
//!
//! - `P_events_N`, one per partition `N`, subjects `P.e.N.>`. Each event stream (aggregate
//!   type `T`, aggregate id `I`) is one subject, `P.e.N.xT64.xI64` (each name as `x` and its
//!   URL-safe base64, so any text makes a valid token), in partition `N` = FNV-1a-64 of the
//!   aggregate id modulo the partition count.
//! - Key-value buckets (JetStream streams as NATS defines buckets: stream `KV_<bucket>`,
//!   subjects `$KV.<bucket>.<key>`, one message per key, so `nats kv` can read them; the store
//!   reads them with requests its leader answers, and writes snapshots and checkpoints
//!   conditioned on the key's and the bucket's last sequence):
//!   - `P_event_ids`, key `<event id>`: where each event is (partition, message sequence,
//!     index in the batch, version, stream);
//!   - `P_snapshots`, key `xT64.xI64`: each stream's latest snapshot;
//!   - `P_checkpoints` (created by [`NatsStore::checkpoints`]), keys `xN64.state` and
//!     `xN64.claim` per projection `N`: see [`NatsCheckpoints`].
//!
//! ## Appends: one message per batch, the version checked by the server
//!
//! A batch is checked (limits, JSON payloads), then its ids are looked up in the event-id
//! index: a batch stored whole, as this batch, in this stream is a retry and gets its
//! original outcome; any other stored id makes it a duplicate. The stream's last message is
//! read (from the partition's leader): its sequence `s` and its `Es-Version` header, the
//! stream's version. If the expectation holds, the whole batch is published as **one**
//! message (so it is stored atomically; nats-server 2.9 has no multi-message transaction)
//! with `Nats-Expected-Last-Subject-Sequence: s` and `Nats-Expected-Last-Sequence` set to the
//! partition's last sequence, read before the head: the server refuses it if anything was
//! appended to the stream (or, because a 2.9 cluster checks only the partition's sequence
//! exactly, to the partition) since, so there is no read-then-write race; the store then reads
//! the head again and judges the expectation again (a conflict, or another try, also when
//! another stream of the partition was appended to in between). `NoStream` is `s = 0`.
//!
//! The message carries `Nats-Msg-Id`, a SHA-256 of the stream and the batch's ids: within the
//! partition's deduplication window the server itself recognises a retried publish and
//! answers with the original sequence, from which the original outcome is rebuilt. After the
//! publish the store writes the index entries; if that fails, the append fails as
//! unavailable and its retry (deduplicated) writes them again.
//!
//! The batch message is binary: a tag, the event count, then per event its id, schema
//! version, and name, payload and metadata (JSON) each with its length. The stream is the
//! subject; the version of the batch's last event is the `Es-Version` header; the recording
//! time is the server's timestamp of the message (one per batch).
//!
//! ## Positions: per partition
//!
//! An event's position is `sequence << 16 | index`: the JetStream sequence of its batch's
//! message in the partition, then its index inside the batch (so a batch holds at most
//! 65,536 events). Positions grow strictly within a partition, have holes, and start at
//! 65,536. **The global log is per partition**: a total order inside each, none across
//! partitions. Projections run one runner per partition ([`NatsStore::partition_logs`]), each
//! with a checkpoint of its own: give each runner a name of its own with
//! `ProjectionRunner::with_name` (e.g. `"tally@p0"`). Claims keep one active runner per
//! partition and projection.
//!
//! ## Limits
//!
//! One batch is one message, so the store's limits are capped by the server's `max_payload`
//! (1 MiB by default; raise it, up to 64 MiB, for the default batch limit of 16 MiB). A stream
//! id is part of the subjects, so it is capped at 2,048 bytes (aggregate type and id together),
//! well within the server's control line.
//!
//! ## Reads
//!
//! Every read is a JetStream "get message" request answered by the stream's leader, so it sees
//! every acknowledged append. A stream is read message by message along its subject (the
//! server's per-subject index: no other stream is read); time travel stops at the first batch
//! recorded after the instant. An event by id is one index lookup and one message read.
//!
//! ## Known limits of this version
//!
//! - A partition's log is read one message (batch) per request; a consumer would stream it.
//! - An append costs three round trips (the partition's last sequence, the stream's head, the
//!   publish) plus two requests per event (its id looked up in the index, then written there),
//!   pipelined up to 512 at a time.
//! - `recorded_at` is the leader's clock: after a change of leader it may step back by the
//!   clocks' skew, which time travel by instant then sees.
//! - Two appends of the same new event id to two different streams at the same instant may
//!   both be stored (the index is checked before, and written after, the publish).
//! - JetStream places the partitions' leaders by its elections; [`NatsStore::spread_leaders`]
//!   moves them apart when asked (at setup, after an outage), not continuously.

mod append;
mod checkpoint;
mod codec;
mod error;
mod js;
mod leaders;
mod options;
mod read;
mod snapshot;
mod store;

pub use checkpoint::{NatsCheckpoints, NatsClaim, NatsUnit};
pub use error::NatsError;
pub use options::NatsOptions;
pub use read::PartitionLog;
pub use store::NatsStore;
