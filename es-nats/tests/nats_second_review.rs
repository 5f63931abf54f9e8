//! A second outside review of es-nats, written from its documentation only (the README, docs/,
//! the crate docs of es-nats and the storage traits of es-core): what a user who outgrew one
//! database server relies on. Ordering and gap-free reading of the partition logs under many
//! writers, projections kept while writers run, read-your-writes through another node,
//! idempotent and conditioned appends from two processes, node and quorum loss, a restart
//! between append and read, limits, snapshots, time travel, stream listing.
//!
//! Every test starts its own `nats-server` processes (`es_test_support::nats::NatsCluster`, on
//! free loopback ports) and holds them in a local value: its `Drop` kills every server and
//! removes its directory, also when the test panics (the value is dropped while unwinding), and
//! the guard process of each server kills it if this test process dies. Every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod review;

use es_core::conformance::event;
use es_core::{
    async_trait, event, wait_for_checkpoint, Aggregate, Apply, CheckpointStore, CommandError, DecodedEvent, EventStore,
    ExpectedVersion, GlobalLog, HandlerError, Limit, Limits, LogFilter, Metadata, NewEvent, PollOnly, Projection,
    ProjectionError, ProjectionProgress, ProjectionRunner, RecordedEvent, Repository, RepositoryError, RunnerOptions,
    SnapshotStore, StoreError, StreamCatalog, StreamId, StreamQuery, StreamSlice,
};
use es_nats::{NatsCheckpoints, NatsOptions, NatsStore, PartitionLog};
use es_test_support::nats::NatsCluster;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use review::{append_once_back, bounded, prefix, snapshot, store_on, store_on_a_node};

// ---------------------------------------------------------------------------------------------
// Small helpers (bounds, prefixes, stores and snapshots are in `review/mod.rs`).

/// The URL of node `index` alone.
fn node_url(cluster: &NatsCluster, index: usize) -> String {
    format!("127.0.0.1:{}", cluster.port(index))
}

/// The value of `operation` once it succeeds, trying again on transient errors (bounded).
async fn retrying<T, F, Fut>(what: &str, operation: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match operation().await {
            Ok(value) => return value,
            Err(error) if error.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("{what}: {error:?}"),
        }
    }
}

/// Every event of `stream`, read again on transient errors (bounded).
async fn whole_retrying<S: EventStore>(what: &str, store: &S, stream: &StreamId) -> Vec<RecordedEvent> {
    retrying(what, || {
        store.read_stream(stream, StreamSlice::all()).try_collect::<Vec<_>>()
    })
    .await
}

async fn whole<S: EventStore>(store: &S, stream: &StreamId) -> Vec<RecordedEvent> {
    bounded(
        "a stream read",
        store.read_stream(stream, StreamSlice::all()).try_collect(),
    )
    .await
    .unwrap_or_else(|error| panic!("reading {stream}: {error:?}"))
}

async fn sliced<S: EventStore>(store: &S, stream: &StreamId, slice: StreamSlice) -> Vec<u64> {
    let events: Vec<RecordedEvent> = bounded("a slice read", store.read_stream(stream, slice).try_collect())
        .await
        .unwrap_or_else(|error| panic!("reading {stream} {slice:?}: {error:?}"));
    events.iter().map(|e| e.version).collect()
}

/// A partition's whole log, paged from the start.
async fn whole_log(log: &PartitionLog) -> Vec<RecordedEvent> {
    let mut all: Vec<RecordedEvent> = Vec::new();
    let mut after = 0;
    loop {
        let page = bounded("a log page", log.read_all(after, 1000))
            .await
            .unwrap_or_else(|error| panic!("reading partition {}: {error:?}", log.partition()));
        match page.last() {
            None => return all,
            Some(last) => after = last.position,
        }
        all.extend(page);
    }
}

/// Tails a partition's log in pages of `page` events until `stop` was set before a read that
/// came back empty (so it has read to the head as it is after every write).
async fn tail(log: PartitionLog, page: usize, stop: Arc<AtomicBool>) -> Vec<RecordedEvent> {
    let mut seen: Vec<RecordedEvent> = Vec::new();
    let mut after = 0;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        match log.read_all(after, page).await {
            Ok(events) if events.is_empty() => {
                if stopping {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            Ok(events) => {
                assert!(events.len() <= page, "a page of {} for a limit of {page}", events.len());
                assert!(
                    events.first().is_some_and(|e| e.position > after),
                    "read_all({after}) returned position {:?}",
                    events.first().map(|e| e.position)
                );
                after = events.last().map_or(after, |e| e.position);
                seen.extend(events);
            }
            Err(error) if error.is_transient() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(error) => panic!("tailing partition {}: {error:?}", log.partition()),
        }
    }
}

fn credit(cents: u64) -> NewEvent {
    event("Credited", serde_json::json!({ "cents": cents }))
}

fn strictly_increasing(events: &[RecordedEvent]) -> bool {
    events.windows(2).all(|w| w[0].position < w[1].position)
}

/// Waits until every replica of JetStream stream `name` is current (after a node came back).
async fn replicas_current(context: &async_nats::jetstream::Context, name: &str, replicas: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(info) = context.get_stream(name).await.map(|s| s.cached_info().clone()) {
            if let Some(cluster) = info.cluster {
                if cluster.leader.is_some()
                    && cluster.replicas.len() == replicas - 1
                    && cluster.replicas.iter().all(|peer| peer.current && !peer.offline)
                {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the replicas of {name} did not catch up within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The aggregate and projection of the tests.

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Credited {
    pub cents: u64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum WalletEvent {
    Credited(Credited),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "wallet", event = WalletEvent)]
pub struct Wallet {
    balance: u64,
    credits: u64,
}

impl Apply<Credited> for Wallet {
    fn apply(&mut self, e: &Credited) {
        self.balance += e.cents;
        self.credits += 1;
    }
}

/// Per wallet: how many events, their cents, the last version seen; and any event seen out of
/// its stream's order.
pub struct Ledger;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    events: u64,
    cents: u64,
    last_version: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Books {
    per_wallet: BTreeMap<String, Entry>,
    out_of_order: Vec<String>,
}

#[async_trait]
impl Projection for Ledger {
    const NAME: &'static str = "ledger";
    const AGGREGATE_TYPES: &'static [&'static str] = &["wallet"];
    type Event = WalletEvent;
    type Context = Books;

    async fn handle(&self, books: &mut Books, event: &DecodedEvent<WalletEvent>) -> Result<(), HandlerError> {
        let id = event.envelope.stream.aggregate_id.clone();
        let entry = books.per_wallet.entry(id.clone()).or_default();
        if event.envelope.version != entry.last_version + 1 {
            books.out_of_order.push(format!(
                "{id}: v{} after v{}",
                event.envelope.version, entry.last_version
            ));
        }
        let WalletEvent::Credited(credited) = &event.event;
        entry.events += 1;
        entry.cents += credited.cents;
        entry.last_version = event.envelope.version;
        Ok(())
    }

    async fn reset(&self, books: &mut Books) -> Result<(), HandlerError> {
        *books = Books::default();
        Ok(())
    }
}

const LIVE: [&str; 3] = ["ledger@p0", "ledger@p1", "ledger@p2"];
const REPLAY: [&str; 3] = ["replay@p0", "replay@p1", "replay@p2"];

/// A ledger runner of one partition's log.
type LedgerRunner = ProjectionRunner<Ledger, PartitionLog, NatsCheckpoints<Books>>;

/// One ledger runner per partition of a store, each running (polling) under its `LIVE` name
/// until stopped.
struct LiveLedgers {
    /// Each partition's runner progress, in partition order.
    progress: Vec<ProjectionProgress>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    running: Vec<tokio::task::JoinHandle<(Result<(), ProjectionError>, LedgerRunner)>>,
}

impl LiveLedgers {
    fn start(store: &NatsStore, checkpoints: &NatsCheckpoints<Books>, options: RunnerOptions) -> Self {
        let mut ledgers = LiveLedgers {
            progress: Vec::new(),
            stops: Vec::new(),
            running: Vec::new(),
        };
        for log in store.partition_logs() {
            let runner = ProjectionRunner::new(Ledger, log.clone(), checkpoints.clone())
                .with_name(LIVE[log.partition() as usize])
                .with_options(options);
            ledgers.progress.push(runner.progress());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            ledgers.stops.push(stop);
            ledgers.running.push(tokio::spawn(async move {
                let ran = runner
                    .run(PollOnly, async {
                        let _ = stopped.await;
                    })
                    .await;
                (ran, runner)
            }));
        }
        ledgers
    }

    /// Stops every runner (bounded), fails the test if one had stopped on its own, and gives
    /// the runners back.
    async fn stop(self) -> Vec<LedgerRunner> {
        for stop in self.stops {
            let _ = stop.send(());
        }
        let mut runners = Vec::new();
        for run in self.running {
            let (ran, runner) = bounded("a runner to stop", run).await.expect("a runner joined");
            assert!(ran.is_ok(), "a runner stopped on its own: {ran:?}");
            runners.push(runner);
        }
        runners
    }
}

fn wallet_stream(id: &str) -> StreamId {
    Repository::<Wallet, NatsStore>::stream_id(id)
}

// ---------------------------------------------------------------------------------------------
// 1. The global log of each partition: ordered and gap-free while writers commit.

/// What one writer had acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    stream: StreamId,
    ids: Vec<Uuid>,
    positions: Vec<u64>,
    versions: (u64, u64),
}

/// Appends `appends` batches of 1 to 3 events, round robin over four streams of its own (two
/// wallets, two orders), each at the version it last got.
async fn write_own_streams(store: NatsStore, writer: usize, appends: usize) -> Vec<Acked> {
    let streams: Vec<StreamId> = (0..4)
        .map(|k| StreamId::new(if k % 2 == 0 { "wallet" } else { "order" }, format!("w{writer}-{k}")))
        .collect();
    let mut versions = [0u64; 4];
    let mut acked = Vec::new();
    for n in 0..appends {
        let k = n % 4;
        let batch: Vec<NewEvent> = (0..(n % 3) + 1)
            .map(|i| {
                if k % 2 == 0 {
                    credit((n * 10 + i) as u64)
                } else {
                    event("Placed", serde_json::json!({ "n": n }))
                }
            })
            .collect();
        let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
        let started = Instant::now();
        let outcome = loop {
            match store
                .append(&streams[k], ExpectedVersion::Exact(versions[k]), batch.clone())
                .await
            {
                Ok(outcome) => break outcome,
                Err(error) if error.is_transient() && started.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(error) => panic!("writer {writer}, append {n} to {}: {error:?}", streams[k]),
            }
        };
        assert_eq!(outcome.previous_version, versions[k]);
        assert_eq!(outcome.new_version, versions[k] + ids.len() as u64);
        assert_eq!(outcome.positions.len(), ids.len());
        acked.push(Acked {
            stream: streams[k].clone(),
            ids,
            positions: outcome.positions.clone(),
            versions: (outcome.previous_version + 1, outcome.new_version),
        });
        versions[k] = outcome.new_version;
    }
    acked
}

/// Six writers on two connections append to 24 streams of three partitions (replicated three
/// times on a three-node cluster) while one reader per partition tails its log in pages of 7.
/// Each reader sees its partition's log as a full read from the start returns it afterwards:
/// every acknowledged event of the partition exactly once, at the position its append
/// returned, positions strictly increasing, each stream's versions in order; `read_filtered`,
/// `tail` and `replay_all` agree with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_logs_never_skip_an_event_while_many_writers_commit() {
    let cluster = NatsCluster::start(3).await;
    let options = NatsOptions::new().prefix(prefix()).partitions(3).replicas(3);
    let first = store_on(&cluster.url(), options.clone()).await;
    let second = store_on(&cluster.url(), options).await;

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = first
        .partition_logs()
        .into_iter()
        .map(|log| tokio::spawn(tail(log, 7, Arc::clone(&stop))))
        .collect();
    let writers: Vec<_> = (0..6)
        .map(|writer| {
            let store = if writer % 2 == 0 { first.clone() } else { second.clone() };
            tokio::spawn(write_own_streams(store, writer, 24))
        })
        .collect();
    let mut acked: Vec<Acked> = Vec::new();
    for writer in writers {
        acked.extend(bounded("a writer", writer).await.expect("a writer joined"));
    }
    stop.store(true, Ordering::SeqCst);
    let mut seen_by_partition = Vec::new();
    for reader in readers {
        seen_by_partition.push(bounded("a reader", reader).await.expect("a reader joined"));
    }

    // Where each acknowledged event must be.
    let mut expected: BTreeMap<Uuid, (StreamId, u64, u64)> = BTreeMap::new();
    for batch in &acked {
        for (i, id) in batch.ids.iter().enumerate() {
            expected.insert(
                *id,
                (batch.stream.clone(), batch.versions.0 + i as u64, batch.positions[i]),
            );
        }
    }
    assert_eq!(expected.len(), acked.iter().map(|b| b.ids.len()).sum::<usize>());

    let mut found = 0;
    for (log, seen) in first.partition_logs().iter().zip(&seen_by_partition) {
        let p = log.partition();
        let full = whole_log(log).await;
        let key = |events: &[RecordedEvent]| events.iter().map(|e| (e.position, e.event_id)).collect::<Vec<_>>();
        assert_eq!(
            key(seen),
            key(&full),
            "partition {p}: what the tailing reader saw differs from the log read again"
        );
        assert!(strictly_increasing(&full), "partition {p}: positions not increasing");
        let mut last_version: BTreeMap<StreamId, u64> = BTreeMap::new();
        for e in &full {
            assert_eq!(first.partition_of(&e.stream), p, "{} in partition {p}", e.stream);
            let (stream, version, position) = expected
                .get(&e.event_id)
                .unwrap_or_else(|| panic!("partition {p}: {} was never acknowledged", e.event_id));
            assert_eq!(
                (&e.stream, e.version, e.position),
                (stream, *version, *position),
                "partition {p}: event {} not where its append said",
                e.event_id
            );
            let last = last_version.entry(e.stream.clone()).or_default();
            assert_eq!(e.version, *last + 1, "{}: versions out of order in the log", e.stream);
            *last = e.version;
        }
        found += full.len();

        // The other readers of the same guarantee.
        let orders = bounded(
            "read_filtered",
            log.read_filtered(0, 10_000, &LogFilter::all().aggregate_types(["order"])),
        )
        .await
        .expect("read_filtered");
        let only_orders: Vec<_> = full.iter().filter(|e| e.stream.aggregate_type == "order").collect();
        assert_eq!(
            orders.events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            only_orders.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            "partition {p}: read_filtered"
        );
        let tail = bounded("tail", log.tail(0)).await.expect("tail");
        assert_eq!(tail.events, full.len() as u64, "partition {p}: tail counts");
        assert_eq!(tail.head_position, full.last().map_or(0, |e| e.position));
        let mut replayed = Vec::new();
        bounded(
            "replay_all",
            log.replay_all(0, &LogFilter::all(), &mut |e| {
                replayed.push(e.event_id);
                std::ops::ControlFlow::Continue(())
            }),
        )
        .await
        .expect("replay_all");
        assert_eq!(replayed, full.iter().map(|e| e.event_id).collect::<Vec<_>>());
    }
    assert_eq!(
        found,
        expected.len(),
        "the logs together hold every acknowledged event once"
    );
    drop(cluster);
}

// ---------------------------------------------------------------------------------------------
// 2. A projection kept while writers run, read-your-writes, then a full replay.

/// One runner per partition runs (polling) while four writers execute commands through the
/// repository. After each command, the partition's runner progress reaches the command's
/// position (`wait_for`) and the committed model holds its events, also when read from another
/// connection with `wait_for_checkpoint`. Afterwards the live model equals a full replay under
/// another name and what the commands wrote; no event was seen out of its stream's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_kept_while_writers_run_equals_a_full_replay() {
    let cluster = NatsCluster::start(1).await;
    let options = NatsOptions::new().prefix(prefix()).partitions(3);
    let store = store_on(&cluster.url(), options.clone()).await;
    let other_process = store_on(&cluster.url(), options).await;
    let checkpoints: NatsCheckpoints<Books> = store.checkpoints().await.expect("checkpoints");
    let elsewhere: NatsCheckpoints<Books> = other_process.checkpoints().await.expect("checkpoints elsewhere");

    let runner_options = RunnerOptions {
        poll_interval: Duration::from_millis(50),
        batch_size: 16,
        ..RunnerOptions::default()
    };
    let ledgers = LiveLedgers::start(&store, &checkpoints, runner_options);

    let progress = Arc::new(ledgers.progress.clone());
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let wallets = Repository::<Wallet, _>::new(store.clone());
            let (store, progress, checkpoints, elsewhere) = (
                store.clone(),
                Arc::clone(&progress),
                checkpoints.clone(),
                elsewhere.clone(),
            );
            tokio::spawn(async move {
                let mut written: BTreeMap<String, (u64, u64)> = BTreeMap::new();
                for n in 0..12u64 {
                    let id = format!("wallet-{writer}-{}", n % 3);
                    let cents = 100 * writer as u64 + n;
                    let executed = wallets
                        .execute(&id, Metadata::new(), |_: &Wallet| vec![Credited { cents }.into()])
                        .await
                        .unwrap_or_else(|error| panic!("{id}: {error:?}"));
                    let entry = written.entry(id.clone()).or_default();
                    entry.0 += 1;
                    entry.1 += cents;
                    assert_eq!(executed.version, entry.0);
                    let p = store.partition_of(&wallet_stream(&id)) as usize;
                    // Read-your-writes in the runner's process...
                    progress[p]
                        .wait_for(executed.position(), Duration::from_secs(30))
                        .await
                        .unwrap_or_else(|error| panic!("{id}: {error}"));
                    let model = checkpoints.model(LIVE[p]).await.expect("the live model");
                    let seen = model.per_wallet.get(&id).cloned().unwrap_or_default();
                    assert!(
                        seen.last_version >= executed.version,
                        "{id}: the model is at v{} after waiting for v{}",
                        seen.last_version,
                        executed.version
                    );
                    // ... and in another one, by its committed checkpoint.
                    wait_for_checkpoint(
                        &elsewhere,
                        LIVE[p],
                        executed.position(),
                        Duration::from_millis(20),
                        Duration::from_secs(30),
                    )
                    .await
                    .unwrap_or_else(|error| panic!("{id} from another process: {error}"));
                    let model = elsewhere.model(LIVE[p]).await.expect("the live model elsewhere");
                    assert!(model
                        .per_wallet
                        .get(&id)
                        .is_some_and(|e| e.last_version >= executed.version));
                }
                written
            })
        })
        .collect();
    let mut written: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for writer in writers {
        written.extend(bounded("a writer", writer).await.expect("a writer joined"));
    }
    let runners = ledgers.stop().await;
    for runner in &runners {
        let lag = bounded("lag", runner.lag()).await.expect("lag");
        assert_eq!(lag.events_behind, 0, "{}: {lag:?}", runner.name());
    }

    // A full replay of each partition under another name.
    let mut live_whole = BTreeMap::new();
    for log in store.partition_logs() {
        let p = log.partition() as usize;
        let replay = ProjectionRunner::new(Ledger, log.clone(), checkpoints.clone()).with_name(REPLAY[p]);
        bounded("a replay", replay.catch_up()).await.expect("replayed");
        let live = checkpoints.model(LIVE[p]).await.expect("live");
        let replayed = checkpoints.model(REPLAY[p]).await.expect("replayed");
        assert_eq!(
            live, replayed,
            "partition {p}: the live model differs from a full replay"
        );
        assert!(live.out_of_order.is_empty(), "partition {p}: {:?}", live.out_of_order);
        for (id, entry) in live.per_wallet {
            assert_eq!(store.partition_of(&wallet_stream(&id)) as usize, p);
            live_whole.insert(id, (entry.events, entry.cents));
        }
    }
    assert_eq!(live_whole, written, "the model holds exactly what the commands wrote");
    drop(cluster);
}

// ---------------------------------------------------------------------------------------------
// 3. Read-your-writes through another node.

/// A writer connected to one node and a reader connected to another (not the leader of
/// partition 0): every acknowledged append, snapshot and checkpoint is visible to the reader at
/// once ("Every read is a JetStream get message request answered by the stream's leader, so it
/// sees every acknowledged append").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_on_another_node_sees_every_acknowledged_write_at_once() {
    let cluster = NatsCluster::start(3).await;
    let options = NatsOptions::new().prefix(prefix()).partitions(2).replicas(3);
    let setup = store_on(&cluster.url(), options.clone()).await;
    let leaders = bounded("the leaders", setup.partition_leaders())
        .await
        .expect("leaders");
    let leader0: usize = leaders[0]
        .as_deref()
        .and_then(|name| name.strip_prefix('n'))
        .and_then(|n| n.parse().ok())
        .expect("partition 0 has a leader");
    let reader_node = (leader0 + 1) % 3;
    let writer_node = (leader0 + 2) % 3;
    let writer = store_on(&node_url(&cluster, writer_node), options.clone()).await;
    let reader = store_on(&node_url(&cluster, reader_node), options).await;
    let writer_checkpoints: NatsCheckpoints<Vec<u64>> = writer.checkpoints().await.expect("checkpoints");
    let reader_checkpoints: NatsCheckpoints<Vec<u64>> = reader.checkpoints().await.expect("checkpoints");
    let mut claim = writer_checkpoints.claim("marks").await.expect("a claim");

    let streams: Vec<StreamId> = (0..6).map(|k| StreamId::new("wallet", format!("ryw-{k}"))).collect();
    let mut versions = vec![0u64; streams.len()];
    for n in 0..40usize {
        let k = n % streams.len();
        let stream = &streams[k];
        let batch: Vec<NewEvent> = (0..(n % 2) + 1).map(|i| credit((n + i) as u64)).collect();
        let last_id = batch.last().expect("a batch").event_id;
        let outcome = bounded(
            "an append",
            writer.append(stream, ExpectedVersion::Exact(versions[k]), batch),
        )
        .await
        .unwrap_or_else(|error| panic!("append {n}: {error:?}"));
        versions[k] = outcome.new_version;
        let last_position = *outcome.positions.last().expect("positions");

        assert_eq!(
            reader.stream_version(stream).await.expect("stream_version"),
            outcome.new_version,
            "append {n}: the other node's reader has not the new version"
        );
        let read = whole(&reader, stream).await;
        assert_eq!(
            read.last().map(|e| (e.version, e.position)),
            Some((outcome.new_version, last_position))
        );
        let by_id = reader
            .read_event(last_id)
            .await
            .expect("read_event")
            .unwrap_or_else(|| panic!("append {n}: the other node's reader cannot find event {last_id} by id"));
        assert_eq!((by_id.version, by_id.position), (outcome.new_version, last_position));
        let log = reader.partition_log(reader.partition_of(stream)).expect("a partition");
        let page = log.read_all(outcome.positions[0] - 1, 10).await.expect("the log");
        assert_eq!(
            page.iter().map(|e| e.position).collect::<Vec<_>>(),
            outcome.positions,
            "append {n}: the other node's partition log"
        );
        let listed = reader
            .list_streams(&StreamQuery {
                aggregate_type: Some("wallet".into()),
                id_prefix: Some(stream.aggregate_id.clone()),
                ..StreamQuery::default()
            })
            .await
            .expect("listed");
        assert_eq!(
            listed.iter().map(|s| s.version).collect::<Vec<_>>(),
            vec![outcome.new_version]
        );

        if n % 5 == 4 {
            writer
                .save_snapshot(snapshot(stream, outcome.new_version, br#"{"n":1}"#))
                .await
                .expect("a snapshot");
            let loaded = reader.load_snapshot(stream).await.expect("load").expect("a snapshot");
            assert_eq!(
                loaded.version, outcome.new_version,
                "append {n}: the other node's snapshot"
            );

            let (mut unit, _) = writer_checkpoints.begin(&mut claim).await.expect("a unit");
            writer_checkpoints.context(&mut unit).push(last_position);
            writer_checkpoints.commit(unit, last_position).await.expect("a commit");
            assert_eq!(
                reader_checkpoints.checkpoint("marks").await.expect("checkpoint"),
                last_position,
                "append {n}: the other node's checkpoint"
            );
            assert_eq!(
                reader_checkpoints.model("marks").await.expect("model").last(),
                Some(&last_position)
            );
        }
    }
    drop(claim);
    drop(cluster);
}

// ---------------------------------------------------------------------------------------------
// 4. The same request from two processes at once.

fn credit_ten(_: &Wallet) -> Vec<WalletEvent> {
    vec![Credited { cents: 10 }.into(), Credited { cents: 1 }.into()]
}

/// A client whose answer was lost sends its request again while the first is still in flight,
/// to another instance of the service (another connection, to another node). Both come back
/// with the same outcome, one of them marked `already_stored`, and the events are stored once.
/// The same for a raw batch appended by both at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_racing_from_two_processes_is_stored_once() {
    let cluster = NatsCluster::start(3).await;
    let options = NatsOptions::new().prefix(prefix()).replicas(3);
    let a = store_on(&node_url(&cluster, 0), options.clone()).await;
    let b = store_on(&node_url(&cluster, 1), options).await;
    let wallets_a = Repository::<Wallet, _>::new(a.clone());
    let wallets_b = Repository::<Wallet, _>::new(b.clone());

    for round in 0..12u64 {
        let request = Uuid::now_v7();
        let (first, second) = bounded("two sends of one request", async {
            tokio::join!(
                wallets_a.execute("twice", Metadata::new().with_command_id(request), credit_ten),
                wallets_b.execute("twice", Metadata::new().with_command_id(request), credit_ten),
            )
        })
        .await;
        let first = first.unwrap_or_else(|error| panic!("round {round}, first send: {error:?}"));
        let second = second.unwrap_or_else(|error| panic!("round {round}, second send: {error:?}"));
        assert_eq!(first.appended, second.appended, "round {round}: two outcomes");
        assert_eq!(
            [first.already_stored, second.already_stored]
                .iter()
                .filter(|s| !**s)
                .count(),
            1,
            "round {round}: exactly one send stores the events"
        );
        assert_eq!(first.version, 2 * (round + 1));
        let version = a.stream_version(&wallet_stream("twice")).await.expect("version");
        assert_eq!(version, 2 * (round + 1), "round {round}: stored twice");
    }
    let loaded = wallets_b.load("twice").await.expect("load");
    assert_eq!((loaded.version, loaded.aggregate.balance), (24, 132));

    let stream = StreamId::new("wallet", "raw");
    let mut version = 0;
    for round in 0..12 {
        let batch = vec![credit(round), credit(round + 1)];
        let (x, y) = bounded("one batch from two processes", async {
            tokio::join!(
                a.append(&stream, ExpectedVersion::Exact(version), batch.clone()),
                b.append(&stream, ExpectedVersion::Exact(version), batch.clone()),
            )
        })
        .await;
        let x = x.unwrap_or_else(|error| panic!("round {round}, first: {error:?}"));
        let y = y.unwrap_or_else(|error| panic!("round {round}, second: {error:?}"));
        assert_eq!(x.positions, y.positions, "round {round}");
        assert_eq!((x.new_version, y.new_version), (version + 2, version + 2));
        assert_eq!([x.already_stored, y.already_stored].iter().filter(|s| !**s).count(), 1);
        version += 2;
    }
    let events = whole(&b, &stream).await;
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=24).collect::<Vec<_>>()
    );
    drop(cluster);
}

/// "When every event of the batch is already stored in `stream`, at consecutive versions in
/// batch order ..., nothing is written and the original outcome is returned, with
/// `already_stored` set, whatever `expected` says: the retry may come from a writer that has
/// since reloaded the stream" — here from another process, after other appends, and after
/// JetStream's deduplication window has passed (so through the event-id index alone). The ids
/// in another order, not consecutive, or mixed with a new one are a `DuplicateEventId`, and the
/// batch writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_recognised_after_the_dedup_window_from_another_process() {
    let cluster = NatsCluster::start(1).await;
    let options = NatsOptions::new()
        .prefix(prefix())
        .partitions(2)
        .duplicate_window(Duration::from_secs(1));
    let a = store_on(&cluster.url(), options.clone()).await;
    let b = store_on(&cluster.url(), options).await;
    let stream = StreamId::new("wallet", "retried");
    let batch = vec![credit(1), credit(2), credit(3)];
    let first = a
        .append(&stream, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("stored");
    a.append(&stream, ExpectedVersion::Exact(3), vec![credit(4)])
        .await
        .expect("another append");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(3),
        ExpectedVersion::Exact(99),
        ExpectedVersion::Any,
        ExpectedVersion::StreamExists,
    ] {
        let retried = bounded("a retry", b.append(&stream, expected, batch.clone()))
            .await
            .unwrap_or_else(|error| panic!("a retry expecting {expected:?}: {error:?}"));
        assert!(retried.already_stored, "{expected:?}: {retried:?}");
        assert_eq!(
            (retried.previous_version, retried.new_version, &retried.positions),
            (0, 3, &first.positions),
            "{expected:?}: not the original outcome"
        );
    }

    let fresh = credit(5);
    let displaced: [(&str, Vec<NewEvent>); 3] = [
        ("reversed", vec![batch[2].clone(), batch[1].clone(), batch[0].clone()]),
        ("not consecutive", vec![batch[0].clone(), batch[2].clone()]),
        ("with a new id", vec![batch[0].clone(), fresh.clone()]),
    ];
    for (what, events) in displaced {
        let refused = bounded(what, b.append(&stream, ExpectedVersion::Exact(4), events)).await;
        assert!(
            matches!(refused, Err(StoreError::DuplicateEventId { .. })),
            "{what}: {refused:?}"
        );
    }
    let elsewhere = b
        .append(
            &StreamId::new("wallet", "elsewhere"),
            ExpectedVersion::Any,
            batch.clone(),
        )
        .await;
    assert!(
        matches!(elsewhere, Err(StoreError::DuplicateEventId { .. })),
        "{elsewhere:?}"
    );
    assert!(b.read_event(fresh.event_id).await.expect("by id").is_none());
    assert_eq!(a.stream_version(&stream).await.expect("version"), 4);
    let events = whole(&a, &stream).await;
    assert_eq!(events.len(), 4);
    drop(cluster);
}

// ---------------------------------------------------------------------------------------------
// 5. Optimistic concurrency across two processes.

/// Two processes on two nodes: a copy saved after another process's command is a typed
/// conflict and writes nothing; racing appends at one expected version let exactly one win, the
/// loser told the actual version; commands from both processes at once are all carried out or
/// refused as conflicts, and the stream holds exactly the carried-out ones, gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_concurrency_holds_across_two_processes() {
    let cluster = NatsCluster::start(3).await;
    let options = NatsOptions::new().prefix(prefix()).partitions(2).replicas(3);
    let a = store_on(&node_url(&cluster, 1), options.clone()).await;
    let b = store_on(&node_url(&cluster, 2), options).await;
    let wallets_a = Repository::<Wallet, _>::new(a.clone());
    let wallets_b = Repository::<Wallet, _>::new(b.clone());

    wallets_a
        .execute("shared", Metadata::new(), |_: &Wallet| {
            vec![Credited { cents: 1 }.into()]
        })
        .await
        .expect("opened");
    let mut copy = wallets_a.load_for_update("shared").await.expect("loaded");
    copy.decide(|_| vec![WalletEvent::from(Credited { cents: 1000 })])
        .expect("decided");
    wallets_b
        .execute("shared", Metadata::new(), |_: &Wallet| {
            vec![Credited { cents: 2 }.into()]
        })
        .await
        .expect("the other process");
    let refused = wallets_a.save(&mut copy, Metadata::new()).await;
    assert!(
        matches!(&refused, Err(RepositoryError::Conflict(c)) if c.actual == 2 && c.expected == ExpectedVersion::Exact(1)),
        "{refused:?}"
    );
    assert_eq!(copy.pending().len(), 1, "the recorded event stays pending");
    assert_eq!(wallets_b.load("shared").await.expect("load").aggregate.balance, 3);

    // Raw appends at one expected version, from both processes at once.
    let stream = StreamId::new("wallet", "race");
    let mut version = 0;
    for round in 0..10 {
        let (x, y) = bounded("a race", async {
            tokio::join!(
                a.append(&stream, ExpectedVersion::Exact(version), vec![credit(round)]),
                b.append(
                    &stream,
                    ExpectedVersion::Exact(version),
                    vec![credit(round), credit(round)]
                ),
            )
        })
        .await;
        match (&x, &y) {
            (Ok(won), Err(StoreError::Conflict(lost))) => {
                assert_eq!(
                    (won.new_version, lost.actual),
                    (version + 1, version + 1),
                    "round {round}"
                );
                version += 1;
            }
            (Err(StoreError::Conflict(lost)), Ok(won)) => {
                assert_eq!(
                    (won.new_version, lost.actual),
                    (version + 2, version + 2),
                    "round {round}"
                );
                version += 2;
            }
            _ => panic!("round {round}: not one winner and one typed conflict: {x:?} / {y:?}"),
        }
    }
    assert_eq!(b.stream_version(&stream).await.expect("version"), version);

    // Commands from both processes at once, retried by the repositories.
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let wallets = if t % 2 == 0 {
                wallets_a.clone_handle()
            } else {
                wallets_b.clone_handle()
            };
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for n in 0..4u64 {
                    let cents = 1000 * (t as u64 + 1) + n;
                    match wallets
                        .execute("contended", Metadata::new(), move |_: &Wallet| {
                            vec![Credited { cents }.into()]
                        })
                        .await
                    {
                        Ok(executed) => outcomes.push(Ok((cents, executed.version))),
                        Err(CommandError::Conflict { attempts, .. }) => outcomes.push(Err(attempts)),
                        Err(error) => panic!("task {t}: an untyped failure: {error:?}"),
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                outcomes
            })
        })
        .collect();
    let mut carried_out = Vec::new();
    let mut gave_up = 0;
    for task in tasks {
        for outcome in bounded("the contending commands", task).await.expect("joined") {
            match outcome {
                Ok(done) => carried_out.push(done),
                Err(_) => gave_up += 1,
            }
        }
    }
    assert_eq!(done.load(Ordering::SeqCst), 32);
    let events = whole(&a, &wallet_stream("contended")).await;
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=carried_out.len() as u64).collect::<Vec<_>>()
    );
    let versions: BTreeSet<u64> = carried_out.iter().map(|(_, v)| *v).collect();
    assert_eq!(
        versions.len(),
        carried_out.len(),
        "two commands reported the same version"
    );
    let loaded = wallets_a.load("contended").await.expect("load");
    assert_eq!(
        loaded.aggregate.balance,
        carried_out.iter().map(|(c, _)| c).sum::<u64>()
    );
    eprintln!(
        "contended: {} carried out, {gave_up} gave up on conflicts",
        carried_out.len()
    );

    // `Any` ("no concurrency check") and `StreamExists` on an existing stream never conflict,
    // however many writers of both processes append at once.
    let open = StreamId::new("wallet", "anyone");
    a.append(&open, ExpectedVersion::NoStream, vec![credit(0)])
        .await
        .expect("opened");
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = if t % 2 == 0 { a.clone() } else { b.clone() };
            let open = open.clone();
            tokio::spawn(async move {
                let mut versions = Vec::new();
                for n in 0..8u64 {
                    let expected = if n % 2 == 0 {
                        ExpectedVersion::Any
                    } else {
                        ExpectedVersion::StreamExists
                    };
                    let outcome = store
                        .append(&open, expected, vec![credit(n), credit(n)])
                        .await
                        .unwrap_or_else(|error| panic!("task {t}, {expected:?}: {error:?}"));
                    assert_eq!(outcome.new_version, outcome.previous_version + 2);
                    versions.push(outcome.new_version);
                }
                versions
            })
        })
        .collect();
    let mut reported = BTreeSet::new();
    for task in tasks {
        for version in bounded("the Any writers", task).await.expect("joined") {
            assert!(reported.insert(version), "two appends reported version {version}");
        }
    }
    let events = whole(&b, &open).await;
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=1 + 8 * 8 * 2).collect::<Vec<_>>()
    );
    drop(cluster);
}

/// A second repository over a clone of the same store (clones share one connection).
trait CloneHandle {
    fn clone_handle(&self) -> Self;
}

impl CloneHandle for Repository<Wallet, NatsStore> {
    fn clone_handle(&self) -> Self {
        Repository::new(self.store().clone()).with_max_attempts(20)
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Quorum lost, then back.

/// Two of three nodes killed: appends and snapshots fail as `StoreError::Unavailable` (typed,
/// transient) in bounded time, reads either answer what was acknowledged or fail the same way,
/// and nothing of the failed append is stored twice once the nodes are back: the same batch retried at the same
/// expected version is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_quorum_fails_typed_in_bounded_time_and_recovers() {
    let cluster = NatsCluster::start(3).await;
    let store = store_on(
        &cluster.url(),
        NatsOptions::new()
            .prefix(prefix())
            .replicas(3)
            .request_timeout(Duration::from_secs(2)),
    )
    .await;
    let stream = StreamId::new("wallet", "quorum");
    let opened = vec![credit(1)];
    store
        .append(&stream, ExpectedVersion::NoStream, opened.clone())
        .await
        .expect("before");

    cluster.signal(1, "KILL");
    cluster.signal(2, "KILL");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let batch = vec![credit(2), credit(3)];
    let started = Instant::now();
    let during = bounded(
        "an append without quorum",
        store.append(&stream, ExpectedVersion::Exact(1), batch.clone()),
    )
    .await;
    let took = started.elapsed();
    eprintln!("append without quorum: {took:?}: {during:?}");
    assert!(matches!(during, Err(StoreError::Unavailable(_))), "{during:?}");
    assert!(took < Duration::from_secs(30), "the append took {took:?} to fail");

    // Reads need no new write: the last leader may still answer them (it holds every
    // acknowledged event, since no other node can have taken writes), or they fail as
    // unavailable. Nothing else.
    let read: Result<Vec<_>, _> = bounded(
        "a read without quorum",
        store.read_stream(&stream, StreamSlice::all()).try_collect(),
    )
    .await;
    match &read {
        Ok(events) => assert_eq!(
            events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            vec![opened[0].event_id]
        ),
        Err(error) => assert!(matches!(error, StoreError::Unavailable(_)), "read_stream: {error:?}"),
    }
    let version = bounded("stream_version without quorum", store.stream_version(&stream)).await;
    assert!(
        matches!(version, Ok(1) | Err(StoreError::Unavailable(_))),
        "stream_version: {version:?}"
    );
    let by_id = bounded("read_event without quorum", store.read_event(opened[0].event_id)).await;
    assert!(
        matches!(&by_id, Ok(Some(e)) if e.version == 1) || matches!(by_id, Err(StoreError::Unavailable(_))),
        "read_event: {by_id:?}"
    );
    let listed = bounded(
        "list_streams without quorum",
        store.list_streams(&StreamQuery::default()),
    )
    .await;
    assert!(
        matches!(&listed, Ok(l) if l.len() == 1 && l[0].version == 1)
            || matches!(listed, Err(StoreError::Unavailable(_))),
        "list_streams: {listed:?}"
    );
    let log = store.partition_log(0).expect("partition 0");
    let page = bounded("read_all without quorum", log.read_all(0, 10)).await;
    assert!(
        matches!(&page, Ok(p) if p.len() == 1) || matches!(page, Err(StoreError::Unavailable(_))),
        "read_all: {page:?}"
    );
    eprintln!(
        "reads without quorum: read_stream {}, stream_version {}, read_event {}, list_streams {}, read_all {}",
        read.is_ok(),
        version.is_ok(),
        by_id.is_ok(),
        listed.is_ok(),
        page.is_ok()
    );
    // A write: refused as unavailable.
    let snap = bounded(
        "save_snapshot without quorum",
        store.save_snapshot(snapshot(&stream, 1, b"{}")),
    )
    .await;
    assert!(
        matches!(snap, Err(StoreError::Unavailable(_))),
        "save_snapshot: {snap:?}"
    );
    // A process starting meanwhile: an answer in bounded time (a store, or an error; how the
    // error is classified is checked by `connecting_while_a_node_is_down_fails_only_as_transient`).
    let started = Instant::now();
    let starting = tokio::time::timeout(
        Duration::from_secs(45),
        NatsStore::connect(&cluster.url(), store.options().clone()),
    )
    .await
    .unwrap_or_else(|_| panic!("connecting without quorum did not end within 45 s"));
    eprintln!(
        "connect without quorum: {:?}: {:?}",
        started.elapsed(),
        starting.as_ref().map(|_| ())
    );

    cluster.restart(1);
    cluster.restart(2);
    let outcome = append_once_back(
        "the append once quorum is back",
        &store,
        &stream,
        ExpectedVersion::Exact(1),
        &batch,
    )
    .await;
    assert_eq!((outcome.previous_version, outcome.new_version), (1, 3));
    let events = whole(&store, &stream).await;
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let acked: Vec<Uuid> = opened.iter().chain(&batch).map(|e| e.event_id).collect();
    assert_eq!(ids, acked, "each acknowledged event once, in order");
    for id in acked {
        assert!(store.read_event(id).await.expect("read_event").is_some(), "{id} by id");
    }
    drop(cluster);
}

// ---------------------------------------------------------------------------------------------
// 7. Every node restarted in turn under load.

/// What one writer of the rolling restart did.
#[derive(Debug, Default)]
struct Rolled {
    stream: Option<StreamId>,
    acked: Vec<Uuid>,
    refused: Vec<String>,
    failed: Vec<String>,
    transient: usize,
}

async fn write_through(store: NatsStore, writer: usize, stop: Arc<AtomicBool>) -> Rolled {
    let stream = StreamId::new("wallet", format!("roll-{writer}"));
    let mut rolled = Rolled {
        stream: Some(stream.clone()),
        ..Rolled::default()
    };
    let mut version = 0;
    while !stop.load(Ordering::SeqCst) {
        let batch = vec![credit(version), credit(version + 1)];
        let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
        let started = Instant::now();
        loop {
            match store
                .append(&stream, ExpectedVersion::Exact(version), batch.clone())
                .await
            {
                Ok(outcome) => {
                    version = outcome.new_version;
                    rolled.acked.extend(&ids);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    break;
                }
                Err(error) if error.is_transient() && started.elapsed() < Duration::from_secs(60) => {
                    rolled.transient += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(StoreError::Conflict(conflict)) => {
                    rolled.refused.push(format!("{conflict}"));
                    version = conflict.actual;
                    break;
                }
                Err(error) => {
                    rolled.failed.push(format!("{error:?}"));
                    return rolled;
                }
            }
        }
    }
    rolled
}

/// A rolling restart (each node killed, restarted on its storage, and caught up, in turn) while
/// four writers append, each retrying the same batch at the same expected version on transient
/// errors: no acknowledged event is lost or stored twice, each is found by id at its version,
/// the catalog and the partition logs agree with the streams, and no append failed otherwise
/// than as unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_loses_no_acknowledged_event() {
    let cluster = NatsCluster::start(3).await;
    let prefix = prefix();
    let store = store_on(
        &cluster.url(),
        NatsOptions::new()
            .prefix(prefix.clone())
            .partitions(2)
            .replicas(3)
            .request_timeout(Duration::from_secs(2)),
    )
    .await;
    let nodes: Vec<String> = (0..3).map(|i| node_url(&cluster, i)).collect();
    let watcher = async_nats::connect(nodes.as_slice()).await.expect("a watcher");
    let context = async_nats::jetstream::new(watcher);
    let checkpoints: NatsCheckpoints<Books> = store.checkpoints().await.expect("checkpoints");
    let streams = [
        format!("{prefix}_events_0"),
        format!("{prefix}_events_1"),
        format!("KV_{prefix}_event_ids"),
        format!("KV_{prefix}_checkpoints"),
    ];

    // One runner per partition keeps the ledger throughout.
    let runner_options = RunnerOptions {
        poll_interval: Duration::from_millis(100),
        ..RunnerOptions::default()
    };
    let ledgers = LiveLedgers::start(&store, &checkpoints, runner_options);

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(write_through(store.clone(), w, Arc::clone(&stop))))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let options = store.options().clone();
    for node in 0..3 {
        cluster.signal(node, "KILL");
        tokio::time::sleep(Duration::from_secs(2)).await;
        // A process starting while the node is down, given every node's address, connects
        // and reads (after the election, if the dead node led something).
        let started = Instant::now();
        let fresh = loop {
            match tokio::time::timeout(
                Duration::from_secs(30),
                NatsStore::connect(&cluster.url(), options.clone()),
            )
            .await
            {
                Ok(Ok(fresh)) => break fresh,
                // Any error is tried again here: whether it says it is transient is checked by
                // `connecting_while_a_node_is_down_fails_only_as_transient` below.
                Ok(Err(error)) if started.elapsed() < Duration::from_secs(30) => {
                    eprintln!("connecting with node {node} down: {error:?}; again");
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Ok(Err(error)) => panic!("connecting with node {node} down: {error:?}"),
                Err(_) => panic!("connecting with node {node} down took more than 30 s"),
            }
        };
        let probe = StreamId::new("wallet", "roll-0");
        let seen = retrying("a read with a node down", || fresh.stream_version(&probe)).await;
        assert!(seen > 0, "a new process sees nothing of roll-0 with node {node} down");
        eprintln!(
            "node {node} down: a new process connected and read in {:?}",
            started.elapsed()
        );
        cluster.restart(node);
        for name in &streams {
            bounded("replicas current", replicas_current(&context, name, 3)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut all_acked: BTreeSet<Uuid> = BTreeSet::new();
    let mut transient = 0;
    for writer in writers {
        let rolled = bounded("a writer", writer).await.expect("a writer joined");
        let stream = rolled.stream.clone().expect("a stream");
        assert!(
            rolled.failed.is_empty(),
            "{stream}: failed for good: {:?}",
            rolled.failed
        );
        assert!(
            rolled.refused.is_empty(),
            "{stream}: its own retries refused: {:?}",
            rolled.refused
        );
        transient += rolled.transient;
        let events = whole_retrying("reading a stream", &store, &stream).await;
        assert_eq!(
            events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            rolled.acked,
            "{stream}: stored events differ from the acknowledged ones"
        );
        assert!(events.iter().enumerate().all(|(i, e)| e.version == i as u64 + 1));
        for e in &events {
            let found = retrying("read_event", || store.read_event(e.event_id)).await;
            assert_eq!(
                found.map(|f| (f.version, f.position)),
                Some((e.version, e.position)),
                "{stream}"
            );
        }
        all_acked.extend(rolled.acked.iter().copied());
    }
    let mut in_logs = Vec::new();
    for log in store.partition_logs() {
        let log = &log;
        let events = retrying("a partition log", || async move {
            let mut all: Vec<RecordedEvent> = Vec::new();
            let mut after = 0;
            loop {
                let page = log.read_all(after, 1000).await?;
                match page.last() {
                    None => return Ok(all),
                    Some(last) => after = last.position,
                }
                all.extend(page);
            }
        })
        .await;
        assert!(strictly_increasing(&events));
        in_logs.extend(events.into_iter().map(|e| e.event_id));
    }
    assert_eq!(
        in_logs.len(),
        all_acked.len(),
        "an event twice in the logs, or one missing"
    );
    assert_eq!(in_logs.into_iter().collect::<BTreeSet<_>>(), all_acked);
    let everything = StreamQuery::default();
    let listed = retrying("list_streams", || store.list_streams(&everything)).await;
    assert_eq!(listed.iter().map(|s| s.version).sum::<u64>(), all_acked.len() as u64);

    // The runners rode it out: each partition's ledger reaches its head, counts every event of
    // its wallets once, in order, and no runner stopped.
    for (p, log) in store.partition_logs().iter().enumerate() {
        let head = retrying("the head", || async move { log.tail(0).await.map(|t| t.head_position) }).await;
        ledgers.progress[p]
            .wait_for(head, Duration::from_secs(60))
            .await
            .unwrap_or_else(|error| panic!("partition {p}: {error}"));
    }
    ledgers.stop().await;
    let mut counted = 0;
    for (p, name) in LIVE.iter().enumerate().take(2) {
        let checkpoints = &checkpoints;
        let books = retrying("the model", || async move {
            checkpoints.model(name).await.map_err(StoreError::from)
        })
        .await;
        assert!(books.out_of_order.is_empty(), "partition {p}: {:?}", books.out_of_order);
        for (id, entry) in &books.per_wallet {
            let version = listed
                .iter()
                .find(|s| s.stream.aggregate_id == *id)
                .map(|s| s.version)
                .unwrap_or_else(|| panic!("{id} counted but not listed"));
            assert_eq!((entry.events, entry.last_version), (version, version), "{id}");
            counted += entry.events;
        }
    }
    assert_eq!(
        counted,
        all_acked.len() as u64,
        "the ledgers count every acknowledged event once"
    );
    eprintln!(
        "rolling restart: {} events acknowledged, {transient} transient errors retried",
        all_acked.len()
    );
    drop(cluster);
}

/// A process starting while one node of three is down (quorum kept), given every node's
/// address: `NatsStore::connect` may fail while JetStream elects, but as an outage, since trying
/// again works. The docs: `NatsError::Request` is "A request to JetStream failed: timed out, no
/// responder (a stream without a leader, e.g. during an election), a connection cut
/// (`transient`)", and `NatsError::is_transient` says "Whether trying again later may work";
/// `NatsError::Setup` is for a stream that "could not be created or is configured otherwise".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_while_a_node_is_down_fails_only_as_transient() {
    let cluster = NatsCluster::start(3).await;
    let options = NatsOptions::new()
        .prefix(prefix())
        .partitions(2)
        .replicas(3)
        .request_timeout(Duration::from_secs(2));
    let store = store_on(&cluster.url(), options.clone()).await;
    store
        .append(
            &StreamId::new("wallet", "w"),
            ExpectedVersion::NoStream,
            vec![credit(1)],
        )
        .await
        .expect("appended");

    cluster.signal(1, "KILL");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let mut errors = Vec::new();
    let connected = loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(30),
            NatsStore::connect(&cluster.url(), options.clone()),
        )
        .await
        .unwrap_or_else(|_| panic!("a connect attempt took more than 30 s"));
        match attempt {
            Ok(store) => break store,
            Err(error) => {
                eprintln!(
                    "after {:?}: {error:?} (transient: {})",
                    started.elapsed(),
                    error.is_transient()
                );
                errors.push(error);
                assert!(
                    started.elapsed() < Duration::from_secs(45),
                    "no connection within 45 s: {errors:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let w = StreamId::new("wallet", "w");
    let version = retrying("a read", || connected.stream_version(&w)).await;
    assert_eq!(version, 1);
    eprintln!(
        "connected after {:?} and {} failed attempts",
        started.elapsed(),
        errors.len()
    );
    let not_transient: Vec<_> = errors.iter().filter(|e| !e.is_transient()).collect();
    assert!(
        not_transient.is_empty(),
        "an election reported as a setup failure that trying again will not fix: {not_transient:?}"
    );
    drop(cluster);
}

// ---------------------------------------------------------------------------------------------
// 8. The server restarted between append and read.

/// Everything acknowledged just before a SIGKILL (events with metadata over two partitions, a
/// snapshot, a projection's checkpoint and model) is read back identically after the restart,
/// by a new process and by the old store value; new appends continue the versions and the
/// positions (none handed out again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_append_and_read_keeps_every_acknowledged_write() {
    let cluster = NatsCluster::start(1).await;
    let options = NatsOptions::new()
        .prefix(prefix())
        .partitions(2)
        .request_timeout(Duration::from_secs(2));
    let before = store_on(&cluster.url(), options.clone()).await;
    let checkpoints: NatsCheckpoints<Vec<u64>> = before.checkpoints().await.expect("checkpoints");
    let streams: Vec<StreamId> = (0..6).map(|k| StreamId::new("wallet", format!("kept-{k}"))).collect();
    for (k, stream) in streams.iter().enumerate() {
        let batch: Vec<NewEvent> = (0..k + 1)
            .map(|i| NewEvent {
                metadata: Metadata::new()
                    .with_actor(format!("actor-{k}"))
                    .with_extra("i", i as u64),
                payload: format!("{{ \"cents\" : {i},\n \"note\": \"é\\u00e9\" }}").into_bytes(),
                ..credit(i as u64)
            })
            .collect();
        before
            .append(stream, ExpectedVersion::NoStream, batch)
            .await
            .expect("appended");
    }
    before
        .save_snapshot(snapshot(&streams[3], 4, br#"{"balance":6}"#))
        .await
        .expect("a snapshot");
    {
        let mut claim = checkpoints.claim("kept").await.expect("claim");
        let (mut unit, _) = checkpoints.begin(&mut claim).await.expect("unit");
        checkpoints.context(&mut unit).extend([1, 2, 3]);
        checkpoints.commit(unit, 77).await.expect("commit");
    }
    let mut read_before = Vec::new();
    for stream in &streams {
        read_before.push(whole(&before, stream).await);
    }
    let logs_before: Vec<Vec<RecordedEvent>> = {
        let mut logs = Vec::new();
        for log in before.partition_logs() {
            logs.push(whole_log(&log).await);
        }
        logs
    };
    // The last write was acknowledged; the server dies at once.
    let last = before
        .append(&streams[0], ExpectedVersion::Exact(1), vec![credit(99)])
        .await
        .expect("the last append");
    cluster.signal(0, "KILL");
    cluster.restart(0);

    let after = store_on(&cluster.url(), options).await;
    for (stream, expected) in streams.iter().zip(&read_before) {
        let read = whole_retrying("a read after the restart", &after, stream).await;
        let n = expected.len();
        assert_eq!(
            &read[..n],
            &expected[..],
            "{stream}: read back differently after the restart"
        );
        assert!(
            expected.iter().all(|e| e.payload.starts_with(b"{ \"cents\" : ")),
            "{stream}: the payload's bytes were not kept as written"
        );
        for e in expected {
            assert_eq!(after.read_event(e.event_id).await.expect("by id").as_ref(), Some(e));
        }
    }
    let last_read = whole(&after, &streams[0]).await;
    assert_eq!(last_read.len(), 2);
    assert_eq!(last_read[1].position, last.positions[0], "the last acknowledged append");
    for (log, before) in after.partition_logs().iter().zip(&logs_before) {
        let now = whole_log(log).await;
        assert_eq!(&now[..before.len()], &before[..], "partition {}", log.partition());
    }
    let snap = after.load_snapshot(&streams[3]).await.expect("load").expect("kept");
    assert_eq!((snap.version, snap.state.as_slice()), (4, &br#"{"balance":6}"#[..]));
    let checkpoints_after: NatsCheckpoints<Vec<u64>> = after.checkpoints().await.expect("checkpoints");
    assert_eq!(checkpoints_after.checkpoint("kept").await.expect("checkpoint"), 77);
    assert_eq!(checkpoints_after.model("kept").await.expect("model"), vec![1, 2, 3]);
    let listed = after.list_streams(&StreamQuery::default()).await.expect("listed");
    assert_eq!(
        listed.iter().map(|s| s.version).collect::<Vec<_>>(),
        vec![2, 2, 3, 4, 5, 6]
    );

    // Appends go on: versions continue, positions are never handed out again.
    let head_of = |events: &[RecordedEvent]| events.last().map_or(0, |e| e.position);
    let p = after.partition_of(&streams[0]) as usize;
    let old_head = head_of(&whole_log(&after.partition_logs()[p]).await);
    let next = after
        .append(&streams[0], ExpectedVersion::Exact(2), vec![credit(100)])
        .await
        .expect("after the restart");
    assert_eq!(next.new_version, 3);
    assert!(next.positions[0] > old_head, "a position handed out again");
    // The old store value rides it out too.
    let seen_by_old = retrying("the old store value", || before.stream_version(&streams[0])).await;
    assert_eq!(seen_by_old, 3);
    drop(cluster);
}

// ---------------------------------------------------------------------------------------------
// 9. Refused batches leave no trace.

/// What a refused append's error must be.
type Expectation = dyn Fn(&StoreError) -> bool;
/// Batches refused for each documented reason (each limit the store was given, an invalid name,
/// id, schema version or payload, an id stored elsewhere; an id twice in one batch has a test of
/// its own below): the documented
/// typed error, and nothing written anywhere: no version, no event by id, nothing in the log or
/// the catalog; the refused ids can be appended afterwards (nothing reserved them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batches_leave_no_trace() {
    let cluster = NatsCluster::start(1).await;
    let limits = Limits::DEFAULT
        .with_max_metadata_bytes(64)
        .with_max_event_name_bytes(16)
        .with_max_stream_id_bytes(40)
        .with_max_batch_events(5)
        .with_max_payload_bytes(2000)
        .with_max_batch_bytes(6000);
    let store = store_on(&cluster.url(), NatsOptions::new().prefix(prefix()).limits(limits)).await;
    assert_eq!(store.limits(), limits, "lower limits asked for are kept as they are");

    let stream = StreamId::new("wallet", "refused");
    let ok = || credit(1);
    let big_metadata = || NewEvent {
        metadata: Metadata::new().with_extra("note", "x".repeat(64)),
        ..credit(2)
    };
    let payload_of = |len: usize| {
        let mut text = vec![b'a'; len];
        text[0] = b'"';
        text[len - 1] = b'"';
        text
    };
    let cases: Vec<(&str, StreamId, Vec<NewEvent>, Box<Expectation>)> = vec![
        (
            "metadata over",
            stream.clone(),
            vec![ok(), big_metadata()],
            Box::new(
                |e| matches!(e, StoreError::LimitExceeded(x) if x.limit == Limit::MetadataBytes && x.event == Some(1) && x.max == 64),
            ),
        ),
        (
            "name over",
            stream.clone(),
            vec![NewEvent {
                event_name: "N".repeat(17),
                ..ok()
            }],
            Box::new(
                |e| matches!(e, StoreError::LimitExceeded(x) if x.limit == Limit::EventNameBytes && x.actual == 17),
            ),
        ),
        (
            "stream id over",
            StreamId::new("wallet", "i".repeat(35)),
            vec![ok()],
            Box::new(
                |e| matches!(e, StoreError::LimitExceeded(x) if x.limit == Limit::StreamIdBytes && x.actual == 41),
            ),
        ),
        (
            "too many events",
            stream.clone(),
            (0..6).map(|_| ok()).collect(),
            Box::new(|e| matches!(e, StoreError::LimitExceeded(x) if x.limit == Limit::BatchEvents && x.actual == 6)),
        ),
        (
            "payload over",
            stream.clone(),
            vec![
                ok(),
                NewEvent {
                    payload: payload_of(2001),
                    ..ok()
                },
            ],
            Box::new(
                |e| matches!(e, StoreError::LimitExceeded(x) if x.limit == Limit::PayloadBytes && x.event == Some(1)),
            ),
        ),
        (
            "batch bytes over",
            stream.clone(),
            (0..4)
                .map(|_| NewEvent {
                    payload: payload_of(1990),
                    ..ok()
                })
                .collect(),
            Box::new(|e| matches!(e, StoreError::LimitExceeded(x) if x.limit == Limit::BatchBytes)),
        ),
        (
            "NUL in the id",
            StreamId::new("wallet", "a\0b"),
            vec![ok()],
            Box::new(|e| matches!(e, StoreError::InvalidBatch { .. })),
        ),
        (
            "empty name",
            stream.clone(),
            vec![
                ok(),
                NewEvent {
                    event_name: String::new(),
                    ..ok()
                },
            ],
            Box::new(|e| matches!(e, StoreError::InvalidBatch { .. })),
        ),
        (
            "schema version above i32::MAX",
            stream.clone(),
            vec![NewEvent {
                schema_version: i32::MAX as u32 + 1,
                ..ok()
            }],
            Box::new(|e| matches!(e, StoreError::InvalidBatch { .. })),
        ),
        (
            "payload not JSON",
            stream.clone(),
            vec![
                ok(),
                NewEvent {
                    payload: b"{\"cents\":".to_vec(),
                    ..ok()
                },
            ],
            Box::new(|e| matches!(e, StoreError::InvalidBatch { .. })),
        ),
    ];
    let mut refused_ids = Vec::new();
    for (what, target, batch, expected) in cases {
        for expectation in [ExpectedVersion::NoStream, ExpectedVersion::Any] {
            let result = bounded(what, store.append(&target, expectation, batch.clone())).await;
            match &result {
                Err(error) if expected(error) => {}
                other => panic!("{what} ({expectation:?}): {other:?}"),
            }
        }
        assert_eq!(
            store.stream_version(&target).await.expect("version"),
            0,
            "{what}: written"
        );
        for e in &batch {
            assert!(
                store.read_event(e.event_id).await.expect("by id").is_none(),
                "{what}: stored by id"
            );
        }
        refused_ids.extend(batch.iter().map(|e| e.event_id));
    }
    // An id stored in another stream: the whole batch refused.
    let elsewhere = StreamId::new("wallet", "elsewhere");
    let taken = ok();
    store
        .append(&elsewhere, ExpectedVersion::NoStream, vec![taken.clone()])
        .await
        .expect("stored");
    let fresh = ok();
    let clash = store
        .append(&stream, ExpectedVersion::NoStream, vec![fresh.clone(), taken])
        .await;
    assert!(matches!(clash, Err(StoreError::DuplicateEventId { .. })), "{clash:?}");
    assert!(store.read_event(fresh.event_id).await.expect("by id").is_none());
    refused_ids.push(fresh.event_id);

    let log = store.partition_log(0).expect("one partition");
    assert_eq!(
        whole_log(&log).await.len(),
        1,
        "only the event of `elsewhere` is in the log"
    );
    let listed = store.list_streams(&StreamQuery::default()).await.expect("listed");
    assert_eq!(
        listed.iter().map(|s| s.stream.clone()).collect::<Vec<_>>(),
        vec![elsewhere]
    );

    // Nothing reserved the refused ids: they go in now, five at a time.
    let mut version = 0;
    for chunk in refused_ids.chunks(5) {
        let batch: Vec<NewEvent> = chunk.iter().map(|id| NewEvent { event_id: *id, ..ok() }).collect();
        let outcome = store
            .append(&stream, ExpectedVersion::Exact(version), batch)
            .await
            .unwrap_or_else(|error| panic!("a refused id was reserved: {error:?}"));
        assert!(!outcome.already_stored);
        version = outcome.new_version;
    }
    assert_eq!(version, refused_ids.len() as u64);
    drop(cluster);
}

/// "A batch with an id stored anywhere else (or twice in the batch) is a
/// `StoreError::DuplicateEventId`; either way nothing is written" (`EventStore::append`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_twice_in_one_batch_is_refused_and_nothing_written() {
    let (cluster, store) = store_on_a_node().await;
    let stream = StreamId::new("wallet", "twice");
    let id = Uuid::now_v7();
    let batch = vec![
        NewEvent {
            event_id: id,
            ..credit(1)
        },
        NewEvent {
            event_id: id,
            ..credit(2)
        },
    ];
    let appended = bounded("an append", store.append(&stream, ExpectedVersion::NoStream, batch)).await;
    let stored = whole(&store, &stream).await;
    let by_id = store.read_event(id).await.expect("read_event");
    eprintln!(
        "append: {appended:?}\nstored: {:?}\nby id: {:?}",
        stored
            .iter()
            .map(|e| (e.event_id, e.version, e.position))
            .collect::<Vec<_>>(),
        by_id.map(|e| (e.version, e.position))
    );
    assert!(
        matches!(&appended, Err(StoreError::DuplicateEventId { event_id, .. }) if *event_id == id),
        "{appended:?}"
    );
    assert!(stored.is_empty(), "{} events written", stored.len());
    drop(cluster);
}

// ---------------------------------------------------------------------------------------------
// 10. Limits capped by what one message (and one subject) can carry.

/// Asked for no limits at all on a server with an 8 MiB `max_payload`, the store caps its
/// limits to what one message carries (a batch under 8 MiB, at most 65,536 events: "a batch
/// holds at most 65,536 events"), and refuses a 65,537-event batch as `LimitExceeded` before
/// writing anything. With the default options the defaults that fit are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_capped_by_what_one_message_can_carry() {
    let cluster = NatsCluster::start_with_max_payload(1, Some(8 << 20)).await;
    let defaults = store_on(&cluster.url(), NatsOptions::new().prefix(prefix())).await;
    let limits = defaults.limits();
    assert_eq!(
        limits.max_payload_bytes,
        Limits::DEFAULT.max_payload_bytes,
        "{limits:?}"
    );
    assert_eq!(
        limits.max_metadata_bytes,
        Limits::DEFAULT.max_metadata_bytes,
        "{limits:?}"
    );
    assert_eq!(limits.max_batch_events, Limits::DEFAULT.max_batch_events, "{limits:?}");
    assert!(limits.max_batch_bytes < 8 << 20, "{limits:?}");

    let store = store_on(
        &cluster.url(),
        NatsOptions::new().prefix(prefix()).limits(Limits::UNLIMITED),
    )
    .await;
    let limits = store.limits();
    eprintln!("unlimited, capped: {limits:?}");
    assert!(limits.max_batch_events <= 1 << 16, "{limits:?}");
    assert!(limits.max_batch_bytes < 8 << 20, "{limits:?}");
    assert!(limits.max_payload_bytes < 8 << 20, "{limits:?}");

    let stream = StreamId::new("wallet", "many");
    let many: Vec<NewEvent> = (0..(1 << 16) + 1)
        .map(|_| NewEvent {
            event_name: "C".into(),
            payload: b"1".to_vec(),
            ..credit(0)
        })
        .collect();
    let over = bounded("65,537 events", store.append(&stream, ExpectedVersion::NoStream, many)).await;
    assert!(
        matches!(&over, Err(StoreError::LimitExceeded(x)) if x.limit == Limit::BatchEvents && x.actual == 65_537),
        "{:?}",
        over.as_ref().map(|o| o.new_version)
    );
    assert_eq!(store.stream_version(&stream).await.expect("version"), 0);

    drop(cluster);
}

/// A store given a stream-id limit above the default (4 KiB here; SQLite takes up to 1,000,000
/// bytes, PostgreSQL 2,048) on a server with the default settings. "The limits the store
/// enforces; capped by what one message can carry" (`NatsOptions::limits`), and the design
/// notes: each store takes other limits "up to its backend's ceiling; `EventStore::limits` says
/// what a store enforces". So a stream id under `store.limits()` is stored, or the limit is
/// lowered so that it is refused as `LimitExceeded` before anything is sent; other appends on
/// the same store are not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_id_under_the_stated_limit_is_stored_or_refused_as_a_limit() {
    let cluster = NatsCluster::start(1).await;
    let store = store_on(
        &cluster.url(),
        NatsOptions::new()
            .prefix(prefix())
            .request_timeout(Duration::from_secs(2))
            .limits(Limits::DEFAULT.with_max_stream_id_bytes(4096)),
    )
    .await;
    let limit = store.limits().max_stream_id_bytes;
    let long = StreamId::new("wallet", "L".repeat(limit - "wallet".len()));
    // Another writer on the same store meanwhile.
    let neighbour = {
        let store = store.clone();
        tokio::spawn(async move {
            let stream = StreamId::new("wallet", "neighbour");
            let mut errors = Vec::new();
            for version in 0..40u64 {
                if let Err(error) = store.append(&stream, ExpectedVersion::Any, vec![credit(version)]).await {
                    errors.push(format!("{error:?}"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            errors
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let stored = bounded(
        "a long stream id",
        store.append(&long, ExpectedVersion::NoStream, vec![credit(1)]),
    )
    .await;
    eprintln!(
        "a stream id of {limit} bytes (the stated limit): {stored:?} after {:?}",
        started.elapsed()
    );
    let again = bounded(
        "the same again",
        store.append(&long, ExpectedVersion::NoStream, vec![credit(1)]),
    )
    .await;
    eprintln!("tried again: {again:?}");
    let neighbour_errors = bounded("the neighbour", neighbour).await.expect("joined");
    eprintln!(
        "the neighbour's appends meanwhile: {} failed: {neighbour_errors:?}",
        neighbour_errors.len()
    );
    assert!(
        neighbour_errors.is_empty(),
        "another writer of the store was disturbed: {neighbour_errors:?}"
    );
    match &stored {
        Ok(_) => assert_eq!(whole(&store, &long).await.len(), 1),
        Err(StoreError::LimitExceeded(x)) => assert_eq!(x.limit, Limit::StreamIdBytes),
        Err(other) => panic!("a stream id of {limit} bytes, the store's stated limit: {other:?}"),
    }
    drop(cluster);
}

// ---------------------------------------------------------------------------------------------
// 11. Snapshots.

/// The newest snapshot wins whoever saves (an older one never replaces it, also from another
/// process); a state too large for one message is refused typed and keeps the one before; the
/// repository loads through another process's snapshots at every version as a full replay
/// does; `list_snapshots` pages them in stream order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_keep_the_newest_and_load_like_a_replay() {
    let cluster = NatsCluster::start(1).await;
    let options = NatsOptions::new().prefix(prefix()).partitions(2);
    let a = store_on(&cluster.url(), options.clone()).await;
    let b = store_on(&cluster.url(), options).await;
    let stream = StreamId::new("wallet", "snap");

    a.save_snapshot(snapshot(&stream, 5, br#"{"v":5}"#)).await.expect("v5");
    let older = b.save_snapshot(snapshot(&stream, 3, br#"{"v":3}"#)).await;
    assert!(older.is_ok(), "an older snapshot is not an error: {older:?}");
    assert_eq!(a.load_snapshot(&stream).await.expect("load").expect("one").version, 5);
    b.save_snapshot(snapshot(&stream, 7, br#"{"v":7}"#)).await.expect("v7");
    assert_eq!(a.load_snapshot(&stream).await.expect("load").expect("one").version, 7);

    let mut huge = b"\"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 2 << 20));
    huge.push(b'"');
    let too_big = bounded(
        "a snapshot over max_payload",
        a.save_snapshot(snapshot(&stream, 9, &huge)),
    )
    .await;
    assert!(too_big.is_err(), "a 2 MiB snapshot on a 1 MiB server was saved?");
    eprintln!("too big a snapshot: {too_big:?}");
    let kept = b.load_snapshot(&stream).await.expect("load").expect("one");
    assert_eq!((kept.version, kept.state.as_slice()), (7, &br#"{"v":7}"#[..]));

    // The repository's snapshots, written by one process, read by another.
    let writer = Repository::<Wallet, _>::new(a.clone()).with_snapshot_every(3);
    for cents in 1..=10u64 {
        writer
            .execute("snapped", Metadata::new(), |_: &Wallet| vec![Credited { cents }.into()])
            .await
            .expect("executed");
    }
    let snapped = b
        .load_snapshot(&wallet_stream("snapped"))
        .await
        .expect("load")
        .expect("taken");
    assert_eq!(snapped.version, 9, "the last multiple of 3");
    let with_snapshots = Repository::<Wallet, _>::new(b.clone()).with_snapshot_every(3);
    let without = Repository::<Wallet, _>::new(b.clone());
    for version in 0..=11u64 {
        let x = with_snapshots.load_at_version("snapped", version).await.expect("with");
        let y = without.load_at_version("snapped", version).await.expect("without");
        let expected: u64 = (1..=version.min(10)).sum();
        assert_eq!(
            (x.version, x.aggregate.balance, y.version, y.aggregate.balance),
            (version.min(10), expected, version.min(10), expected),
            "at version {version}"
        );
    }

    // Paging the snapshots.
    for k in 0..5 {
        b.save_snapshot(snapshot(&StreamId::new("order", format!("o{k}")), 1, b"{}"))
            .await
            .expect("saved");
    }
    let mut paged = Vec::new();
    let mut after: Option<StreamId> = None;
    loop {
        let page = a.list_snapshots(after.as_ref(), 2).await.expect("a page");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.stream.clone());
        paged.extend(page.into_iter().map(|s| s.stream));
    }
    let mut expected: Vec<StreamId> = (0..5).map(|k| StreamId::new("order", format!("o{k}"))).collect();
    expected.push(stream.clone());
    expected.push(wallet_stream("snapped"));
    expected.sort();
    assert_eq!(paged, expected);
    drop(cluster);
}

/// A snapshot state that is not JSON: "the durable stores refuse one that is not, as a typed
/// error of their own inside `StoreError::Backend` ... and save nothing" (`SnapshotStore`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_is_not_json_is_refused() {
    let (cluster, store) = store_on_a_node().await;
    let stream = StreamId::new("wallet", "not-json");
    store
        .save_snapshot(snapshot(&stream, 1, br#"{"ok":true}"#))
        .await
        .expect("a JSON one");
    let refused = store.save_snapshot(snapshot(&stream, 2, b"\x00\x01 not json")).await;
    assert!(matches!(refused, Err(StoreError::Backend(_))), "{refused:?}");
    let kept = store.load_snapshot(&stream).await.expect("load").expect("one");
    assert_eq!(kept.version, 1, "the refused one replaced the snapshot");
    drop(cluster);
}

// ---------------------------------------------------------------------------------------------
// 12. Time travel inside and across batches.

/// Three batches a few milliseconds apart: every event of a batch has the batch's time, the
/// first position of a fresh partition is 65,536 and a batch's positions follow each other;
/// version slices cut inside batches; `recorded_until` keeps events recorded at or before the
/// instant (the batch at exactly its time, not one nanosecond before); the repository's time
/// travel agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_cuts_at_versions_inside_batches_and_at_batch_instants() {
    let (cluster, store) = store_on_a_node().await;
    let stream = wallet_stream("travel");
    let b1 = store
        .append(&stream, ExpectedVersion::NoStream, vec![credit(1), credit(2)])
        .await
        .expect("b1");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let b2 = store
        .append(
            &stream,
            ExpectedVersion::Exact(2),
            vec![credit(3), credit(4), credit(5)],
        )
        .await
        .expect("b2");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let b3 = store
        .append(&stream, ExpectedVersion::Exact(5), vec![credit(6)])
        .await
        .expect("b3");

    assert_eq!(b1.positions, vec![1 << 16, (1 << 16) + 1], "positions start at 65,536");
    assert!(b2.positions.windows(2).all(|w| w[1] == w[0] + 1), "{:?}", b2.positions);
    assert!(b2.positions[0] > b1.positions[1] && b3.positions[0] > b2.positions[2]);

    let all = whole(&store, &stream).await;
    assert_eq!(
        all.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    let at = |v: usize| all[v - 1].recorded_at;
    assert_eq!(at(1), at(2));
    assert!(at(3) == at(4) && at(4) == at(5));
    assert!(at(2) < at(3) && at(5) < at(6), "batches recorded in order");

    for (slice, expected) in [
        (StreamSlice::from_version(3).to_version(4), vec![3, 4]),
        (StreamSlice::from_version(4), vec![4, 5, 6]),
        (StreamSlice::from_version(0), vec![1, 2, 3, 4, 5, 6]),
        (StreamSlice::from_version(1).to_version(1), vec![1]),
        (StreamSlice::from_version(2).to_version(2), vec![2]),
        (StreamSlice::from_version(5).to_version(100), vec![5, 6]),
        (StreamSlice::from_version(7), vec![]),
        (StreamSlice::all().to_version(0), vec![]),
        (StreamSlice::all().recorded_until(at(3)), vec![1, 2, 3, 4, 5]),
        (
            StreamSlice::all().recorded_until(at(3) - chrono::Duration::nanoseconds(1)),
            vec![1, 2],
        ),
        (
            StreamSlice::all().recorded_until(at(1) - chrono::Duration::milliseconds(1)),
            vec![],
        ),
        (StreamSlice::from_version(2).recorded_until(at(5)), vec![2, 3, 4, 5]),
        (
            StreamSlice::from_version(4).to_version(4).recorded_until(at(6)),
            vec![4],
        ),
    ] {
        assert_eq!(sliced(&store, &stream, slice).await, expected, "{slice:?}");
    }

    // The log read a page of 1 or 2 at a time, cutting inside batches, and from a position in
    // the middle of a batch; the store is the log of its single partition.
    for page in [1, 2] {
        let mut after = 0;
        let mut positions = Vec::new();
        loop {
            let events = store.read_all(after, page).await.expect("a page");
            let Some(last) = events.last() else { break };
            after = last.position;
            positions.extend(events.iter().map(|e| e.position));
        }
        assert_eq!(
            positions,
            all.iter().map(|e| e.position).collect::<Vec<_>>(),
            "pages of {page}"
        );
    }
    let rest = store.read_all(b2.positions[0], 100).await.expect("from inside b2");
    assert_eq!(rest.iter().map(|e| e.version).collect::<Vec<_>>(), vec![4, 5, 6]);

    let middle = store.read_event(all[3].event_id).await.expect("by id").expect("found");
    assert_eq!(&middle, &all[3]);
    assert_eq!(middle.position, b2.positions[1]);

    let wallets = Repository::<Wallet, _>::new(store.clone());
    let v4 = wallets.load_at_version("travel", 4).await.expect("v4");
    assert_eq!((v4.version, v4.aggregate.balance), (4, 10));
    let t = wallets.load_at_instant("travel", at(3)).await.expect("at b2");
    assert_eq!((t.version, t.aggregate.balance), (5, 15));
    let t = wallets
        .load_at_instant("travel", at(3) - chrono::Duration::nanoseconds(1))
        .await
        .expect("before b2");
    assert_eq!((t.version, t.aggregate.balance), (2, 3));
    drop(cluster);
}

// ---------------------------------------------------------------------------------------------
// 13. Listing streams across partitions.

/// Streams with ids whose encoded subjects sort otherwise than the ids themselves, over four
/// partitions: `list_streams` returns them in (aggregate type, aggregate id) order, filtered by
/// type and id prefix, paged with `after` without repeating or skipping one, each with its
/// version and its last event's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_listing_is_in_stream_order_across_partitions_and_pages() {
    let cluster = NatsCluster::start(1).await;
    let store = store_on(&cluster.url(), NatsOptions::new().prefix(prefix()).partitions(4)).await;
    let ids = [
        "a", "A", "a-1", "a_1", "a.1", "a 1", "0", "Z", "z", "é", "", "ab", "a~", "b", "~", "aa", "a\u{7f}",
    ];
    let types = ["wallet", "Wallet", "order", "w"];
    let mut expected: BTreeMap<StreamId, u64> = BTreeMap::new();
    for (n, kind) in types.iter().enumerate() {
        for (m, id) in ids.iter().enumerate() {
            if (n + m) % 3 == 2 {
                continue;
            }
            let stream = StreamId::new(*kind, *id);
            let events = (n + m) % 3 + 1;
            store
                .append(
                    &stream,
                    ExpectedVersion::NoStream,
                    (0..events).map(|_| credit(1)).collect(),
                )
                .await
                .unwrap_or_else(|error| panic!("{stream:?}: {error:?}"));
            expected.insert(stream, events as u64);
        }
    }
    let partitions: BTreeSet<u32> = expected.keys().map(|s| store.partition_of(s)).collect();
    assert!(partitions.len() > 1, "the streams are spread over partitions");

    // "A partition's log also reads and writes streams (those of the whole store)": an append
    // through partition 0's log to a stream of another partition lands in that partition.
    let elsewhere = (0..100)
        .map(|n| StreamId::new("wallet", format!("via-{n}")))
        .find(|s| store.partition_of(s) != 0)
        .expect("a stream outside partition 0");
    let p0 = store.partition_log(0).expect("partition 0");
    let through = p0
        .append(&elsewhere, ExpectedVersion::NoStream, vec![credit(1)])
        .await
        .expect("an append through another partition's log");
    assert_eq!(p0.stream_version(&elsewhere).await.expect("version"), 1);
    let home = store
        .partition_log(store.partition_of(&elsewhere))
        .expect("its partition");
    let found = whole_log(&home).await;
    assert!(found
        .iter()
        .any(|e| e.position == through.positions[0] && e.stream == elsewhere));
    assert!(whole_log(&p0).await.iter().all(|e| e.stream != elsewhere));
    expected.insert(elsewhere, 1);

    async fn paged(store: &NatsStore, query: StreamQuery) -> Vec<(StreamId, u64)> {
        let mut all = Vec::new();
        let mut query = query;
        loop {
            let page = bounded("a page of streams", store.list_streams(&query))
                .await
                .expect("a page");
            assert!(
                page.len() <= query.limit,
                "{} for a limit of {}",
                page.len(),
                query.limit
            );
            let Some(last) = page.last() else { return all };
            query.after = Some(last.stream.clone());
            all.extend(page.into_iter().map(|s| (s.stream, s.version)));
        }
    }

    let everything = paged(
        &store,
        StreamQuery {
            limit: 1000,
            ..StreamQuery::default()
        },
    )
    .await;
    let wanted: Vec<(StreamId, u64)> = expected.iter().map(|(s, v)| (s.clone(), *v)).collect();
    assert_eq!(
        everything, wanted,
        "one page: not in (type, id) order, or streams missing"
    );
    for limit in [1, 3, 7] {
        let pages = paged(
            &store,
            StreamQuery {
                limit,
                ..StreamQuery::default()
            },
        )
        .await;
        assert_eq!(pages, wanted, "pages of {limit}");
    }
    // What a filtered listing keeps of the whole one.
    type Keeps = fn(&StreamId) -> bool;
    let filtered: [(&str, StreamQuery, Keeps); 2] = [
        (
            "by type",
            StreamQuery {
                aggregate_type: Some("wallet".into()),
                limit: 4,
                ..StreamQuery::default()
            },
            |s| s.aggregate_type == "wallet",
        ),
        (
            "by id prefix",
            StreamQuery {
                id_prefix: Some("a".into()),
                limit: 5,
                ..StreamQuery::default()
            },
            |s| s.aggregate_id.starts_with('a'),
        ),
    ];
    for (what, query, keep) in filtered {
        let wanted_here: Vec<_> = wanted.iter().filter(|(s, _)| keep(s)).cloned().collect();
        assert_eq!(paged(&store, query).await, wanted_here, "{what}");
    }

    let summaries = store
        .list_streams(&StreamQuery {
            aggregate_type: Some("order".into()),
            limit: 1000,
            ..StreamQuery::default()
        })
        .await
        .expect("orders");
    for summary in summaries {
        let events = whole(&store, &summary.stream).await;
        let last = events.last().expect("events");
        assert_eq!(
            (summary.version, summary.last_recorded_at),
            (last.version, last.recorded_at),
            "{:?}",
            summary.stream
        );
    }
    drop(cluster);
}

// ---------------------------------------------------------------------------------------------
// 14. Empty batches and every expectation.

/// "An empty batch writes nothing but still checks `expected`", and each `ExpectedVersion` is
/// checked as documented (`Exact(0)` means the same as `NoStream`), the conflict naming the
/// actual version; nothing of a refused append is in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_batches_and_every_expectation_are_checked() {
    let (cluster, store) = store_on_a_node().await;
    let stream = StreamId::new("wallet", "expect");
    let conflict = |result: Result<es_core::AppendOutcome, StoreError>, actual: u64| match result {
        Err(StoreError::Conflict(c)) => assert_eq!(c.actual, actual, "{c}"),
        other => panic!("expected a conflict at {actual}: {other:?}"),
    };

    conflict(store.append(&stream, ExpectedVersion::StreamExists, vec![]).await, 0);
    conflict(store.append(&stream, ExpectedVersion::Exact(1), vec![]).await, 0);
    conflict(
        store
            .append(&stream, ExpectedVersion::StreamExists, vec![credit(1)])
            .await,
        0,
    );
    let empty = store
        .append(&stream, ExpectedVersion::NoStream, vec![])
        .await
        .expect("an empty batch on a new stream");
    assert_eq!(
        (empty.previous_version, empty.new_version, empty.positions.len()),
        (0, 0, 0)
    );
    assert_eq!(
        store.stream_version(&stream).await.expect("version"),
        0,
        "an empty batch created the stream"
    );
    let listed = store.list_streams(&StreamQuery::default()).await.expect("listed");
    assert!(listed.is_empty(), "{listed:?}");

    store
        .append(&stream, ExpectedVersion::Exact(0), vec![credit(1), credit(2)])
        .await
        .expect("Exact(0) on a new stream");
    conflict(store.append(&stream, ExpectedVersion::NoStream, vec![]).await, 2);
    conflict(
        store.append(&stream, ExpectedVersion::Exact(0), vec![credit(3)]).await,
        2,
    );
    conflict(store.append(&stream, ExpectedVersion::Exact(1), vec![]).await, 2);
    conflict(
        store.append(&stream, ExpectedVersion::Exact(3), vec![credit(3)]).await,
        2,
    );
    let empty = store
        .append(&stream, ExpectedVersion::Exact(2), vec![])
        .await
        .expect("an empty batch at the right version");
    assert_eq!((empty.previous_version, empty.new_version), (2, 2));
    assert!(empty.positions.is_empty());
    let empty = store
        .append(&stream, ExpectedVersion::StreamExists, vec![])
        .await
        .expect("an empty batch on an existing stream");
    assert_eq!(empty.new_version, 2);
    let any = store
        .append(&stream, ExpectedVersion::Any, vec![credit(3)])
        .await
        .expect("Any");
    assert_eq!((any.previous_version, any.new_version), (2, 3));
    let exists = store
        .append(&stream, ExpectedVersion::StreamExists, vec![credit(4)])
        .await
        .expect("StreamExists");
    assert_eq!(exists.new_version, 4);

    let log = whole_log(&store.partition_log(0).expect("a partition")).await;
    assert_eq!(log.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    drop(cluster);
}
