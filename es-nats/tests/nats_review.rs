//! An outside review of es-nats, written from its documentation: the store on real
//! `nats-server` processes that each test starts itself (`es_test_support::nats::NatsCluster`,
//! as `tests/nats/support.rs` does) and stops when it ends, also on a panic (the cluster is a
//! local value, dropped while unwinding; its guard kills the server in any case).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod review;

use es_core::conformance::event;
use es_core::{
    async_trait, event, Aggregate, Apply, AsOf, CheckpointStore, ClaimStatus, CommandError, DecodedEvent, EventStore,
    ExpectedVersion, GlobalLog, HandlerError, Limit, Metadata, NewEvent, PollOnly, Projection, ProjectionRunner,
    Repository, RunnerOptions, SnapshotStore, StoreError, StreamCatalog, StreamId, StreamQuery, StreamSlice,
};
use es_nats::{NatsCheckpoints, NatsError, NatsOptions, NatsStore};
use es_test_support::nats::NatsCluster;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use review::{append_once_back, bounded, prefix, snapshot, store_on, store_on_a_node};

// ---------------------------------------------------------------------------------------------
// The aggregate and projection of the tests.

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Deposited {
    pub cents: u64,
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Opened;

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Opened(Opened),
    Deposited(Deposited),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "account", event = AccountEvent)]
pub struct Account {
    opened: bool,
    balance: u64,
}

impl Apply<Opened> for Account {
    fn apply(&mut self, _: &Opened) {
        self.opened = true;
    }
}

impl Apply<Deposited> for Account {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.cents;
    }
}

/// Counts the events of each account.
pub struct Tally;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    per_stream: BTreeMap<String, u64>,
}

#[async_trait]
impl Projection for Tally {
    const NAME: &'static str = "tally";
    const AGGREGATE_TYPES: &'static [&'static str] = &["account"];
    type Event = AccountEvent;
    type Context = Counts;

    async fn handle(&self, model: &mut Counts, event: &DecodedEvent<AccountEvent>) -> Result<(), HandlerError> {
        *model
            .per_stream
            .entry(event.envelope.stream.aggregate_id.clone())
            .or_default() += 1;
        Ok(())
    }

    async fn reset(&self, model: &mut Counts) -> Result<(), HandlerError> {
        model.per_stream.clear();
        Ok(())
    }
}

const NAMES: [&str; 3] = ["tally@p0", "tally@p1", "tally@p2"];

fn deposit(cents: u64) -> NewEvent {
    event("Deposited", serde_json::json!({ "cents": cents }))
}

/// Runs `task(0)` to `task(15)` at the same time (bounded), each with a clone of `shared`,
/// and fails the test unless every one reports no failures; `tasks` names them in messages.
async fn sixteen_at_once<T, Fut>(tasks: &str, shared: &T, task: impl Fn(T, usize) -> Fut)
where
    T: Clone,
    Fut: std::future::Future<Output = Vec<String>> + Send + 'static,
{
    let running = (0..16).map(|n| tokio::spawn(task(shared.clone(), n)));
    let results = bounded(&format!("the {tasks}"), futures_util::future::join_all(running)).await;
    let failures: Vec<String> = results.into_iter().flat_map(|r| r.expect("joined")).collect();
    assert!(
        failures.is_empty(),
        "{} of the {tasks} failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
}

async fn catch_up_all(store: &NatsStore, checkpoints: &NatsCheckpoints<Counts>) {
    for log in store.partition_logs() {
        let runner =
            ProjectionRunner::new(Tally, log.clone(), checkpoints.clone()).with_name(NAMES[log.partition() as usize]);
        bounded("a catch-up", runner.catch_up()).await.expect("caught up");
    }
}

async fn whole_model(store: &NatsStore, checkpoints: &NatsCheckpoints<Counts>) -> BTreeMap<String, u64> {
    let mut whole = BTreeMap::new();
    for log in store.partition_logs() {
        let model = checkpoints
            .model(NAMES[log.partition() as usize])
            .await
            .expect("a model");
        for (id, count) in model.per_stream {
            let stream = StreamId::new("account", id.clone());
            assert_eq!(
                store.partition_of(&stream),
                log.partition(),
                "{id} counted by its partition"
            );
            assert!(whole.insert(id, count).is_none(), "a stream counted by two partitions");
        }
    }
    whole
}

// ---------------------------------------------------------------------------------------------

/// The repository on a NATS store: commands, refusals, conflicts retried, a request sent again
/// after a lost answer, time travel by version and instant, snapshots, `read_event`, the
/// catalog, and the store-level retry and duplicate rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_on_nats_behaves_as_documented() {
    let cluster = NatsCluster::start(1).await;
    let store = store_on(&cluster.url(), NatsOptions::new().prefix(prefix()).partitions(2)).await;
    let accounts = Repository::<Account, _>::new(store.clone()).with_snapshot_every(2);

    // A command, and the same request sent again after a lost answer.
    let request = Uuid::now_v7();
    let open = |account: &Account| match account.opened {
        true => Err("already open"),
        false => Ok(vec![Opened.into(), Deposited { cents: 500 }.into()]),
    };
    let first = accounts
        .execute("acc-1", Metadata::new().with_command_id(request), open)
        .await
        .expect("opened");
    let t1 = chrono::Utc::now();
    let again = accounts
        .execute("acc-1", Metadata::new().with_command_id(request), open)
        .await
        .expect("recognised");
    assert!(again.already_stored);
    assert_eq!(again.appended, first.appended);
    assert_eq!(again.version, 2);
    let found = accounts
        .find_command("acc-1", request)
        .await
        .expect("find")
        .expect("stored");
    assert_eq!(found.appended, first.appended);
    // A new command id: the rule refuses it, nothing written.
    let refused = accounts.execute("acc-1", Metadata::new(), open).await;
    assert!(
        matches!(refused, Err(CommandError::Rejected("already open"))),
        "{refused:?}"
    );

    tokio::time::sleep(Duration::from_millis(20)).await;
    // A conflict: another writer gets in while the command decides; it is decided again.
    let stream = Repository::<Account, NatsStore>::stream_id("acc-1");
    let interfered = Arc::new(AtomicBool::new(false));
    let executed = accounts
        .execute_async("acc-1", Metadata::new(), |_account| {
            let (store, stream, interfered) = (store.clone(), stream.clone(), Arc::clone(&interfered));
            Box::pin(async move {
                if !interfered.swap(true, Ordering::SeqCst) {
                    store
                        .append(&stream, ExpectedVersion::Exact(2), vec![deposit(7)])
                        .await
                        .expect("the other writer");
                }
                Ok::<_, String>(vec![Deposited { cents: 250 }.into()])
            })
        })
        .await
        .expect("retried after the conflict");
    assert_eq!(executed.attempts, 2);
    assert_eq!((executed.version, executed.aggregate.balance), (4, 757));

    // The stored events, by id.
    for appended in &executed.appended {
        let stored = store.read_event(appended.event_id).await.expect("read").expect("found");
        assert_eq!((stored.version, stored.position), (appended.version, appended.position));
        assert_eq!(stored.stream, stream);
    }
    assert!(store.read_event(Uuid::now_v7()).await.expect("read").is_none());

    // Time travel: by version (below the snapshot at 4) and by instant.
    assert_eq!(accounts.load("acc-1").await.expect("load").aggregate.balance, 757);
    let v1 = accounts.load_at_version("acc-1", 1).await.expect("v1");
    assert_eq!((v1.version, v1.aggregate.opened, v1.aggregate.balance), (1, true, 0));
    let at_t1 = accounts.load_at_instant("acc-1", t1).await.expect("at t1");
    assert_eq!((at_t1.version, at_t1.aggregate.balance), (2, 500));
    let before = accounts
        .load_at_instant("acc-1", t1 - chrono::Duration::hours(1))
        .await
        .expect("before");
    assert_eq!(before.version, 0);
    let snapshot = store.load_snapshot(&stream).await.expect("load").expect("a snapshot");
    assert_eq!(snapshot.version, 4, "taken when the command passed a multiple of 2");
    let listed = store.list_snapshots(None, 10).await.expect("listed");
    assert_eq!(listed.len(), 1);
    let by_stream = accounts.load_stream(&stream, AsOf::Version(3)).await.expect("v3");
    assert_eq!(by_stream.aggregate.balance, 507);

    // No stream lifecycle on NATS: every stream reports open.
    assert!(store.stream_closure(&stream).await.expect("closure").is_none());

    // The store's own rules: the same batch again is a retry; its ids elsewhere a duplicate.
    let s2 = StreamId::new("account", "acc-2");
    let batch = vec![deposit(1), deposit(2)];
    let stored = store
        .append(&s2, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("stored");
    let retried = store
        .append(&s2, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("retried");
    assert!(retried.already_stored);
    assert_eq!(retried.positions, stored.positions);
    let elsewhere = store
        .append(&StreamId::new("account", "acc-3"), ExpectedVersion::Any, batch)
        .await;
    assert!(
        matches!(elsewhere, Err(StoreError::DuplicateEventId { .. })),
        "{elsewhere:?}"
    );
    let stale = store.append(&s2, ExpectedVersion::Exact(1), vec![deposit(3)]).await;
    assert!(
        matches!(&stale, Err(StoreError::Conflict(c)) if c.actual == 2),
        "{stale:?}"
    );
    let not_json = store
        .append(
            &s2,
            ExpectedVersion::Any,
            vec![NewEvent {
                payload: b"{nope".to_vec(),
                ..deposit(0)
            }],
        )
        .await;
    assert!(matches!(not_json, Err(StoreError::InvalidBatch { .. })), "{not_json:?}");

    // The catalog.
    let streams = store
        .list_streams(&StreamQuery {
            aggregate_type: Some("account".into()),
            ..StreamQuery::default()
        })
        .await
        .expect("listed");
    let versions: Vec<(String, u64)> = streams
        .iter()
        .map(|s| (s.stream.aggregate_id.clone(), s.version))
        .collect();
    assert_eq!(versions, vec![("acc-1".into(), 4), ("acc-2".into(), 2)]);
    drop(cluster);
}

/// One runner per partition, each with its checkpoint in the bucket: every event handled once,
/// also after the process "restarts" (a new connection, new runners); claims are exclusive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_runners_handle_each_event_once_across_a_restart() {
    let cluster = NatsCluster::start(1).await;
    let options = NatsOptions::new().prefix(prefix()).partitions(3);
    let store = store_on(&cluster.url(), options.clone()).await;
    // The store is no global log with several partitions (documented).
    assert!(matches!(store.read_all(0, 10).await, Err(StoreError::Backend(_))));
    assert!(store.partition_log(3).is_none());

    for n in 0..12 {
        let stream = StreamId::new("account", format!("a{n}"));
        store
            .append(&stream, ExpectedVersion::NoStream, vec![deposit(1), deposit(2)])
            .await
            .expect("appended");
    }
    let checkpoints: NatsCheckpoints<Counts> = store.checkpoints().await.expect("checkpoints");
    catch_up_all(&store, &checkpoints).await;
    assert_eq!(whole_model(&store, &checkpoints).await.values().sum::<u64>(), 24);

    // "Restart": everything dropped, a new connection, new runners.
    drop((checkpoints, store));
    let store = store_on(&cluster.url(), options).await;
    let checkpoints: NatsCheckpoints<Counts> = store.checkpoints().await.expect("checkpoints");
    for n in 0..12 {
        let stream = StreamId::new("account", format!("a{n}"));
        store
            .append(&stream, ExpectedVersion::Exact(2), vec![deposit(3)])
            .await
            .expect("appended");
    }
    catch_up_all(&store, &checkpoints).await;
    let expected: BTreeMap<String, u64> = (0..12).map(|n| (format!("a{n}"), 3)).collect();
    assert_eq!(whole_model(&store, &checkpoints).await, expected);
    for log in store.partition_logs() {
        let events = log.read_all(0, 1000).await.expect("log");
        assert!(events.windows(2).all(|w| w[0].position < w[1].position));
        assert!(events.iter().all(|e| e.position >= 1 << 16));
        let head = events.last().map_or(0, |e| e.position);
        let name = NAMES[log.partition() as usize];
        assert_eq!(checkpoints.checkpoint(name).await.expect("checkpoint"), head);
    }

    // Claims: one holder at a time; a dropped claim frees the projection.
    let first = checkpoints.claim("solo").await.expect("claimed");
    assert_eq!(
        checkpoints.claim_status("solo").await.expect("status"),
        ClaimStatus::Held
    );
    let waiting = tokio::time::timeout(Duration::from_millis(1500), checkpoints.claim("solo")).await;
    assert!(waiting.is_err(), "a second claim was granted while the first is held");
    drop(first);
    let second = bounded("the second claim", checkpoints.claim("solo"))
        .await
        .expect("claimed");
    drop(second);
    drop(cluster);
}

/// The limits come from the server's `max_payload`: a batch at them is stored whole, one byte or
/// one event over is `LimitExceeded` and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_follow_the_servers_max_payload() {
    let cluster = NatsCluster::start_with_max_payload(1, Some(256 << 10)).await;
    let store = store_on(&cluster.url(), NatsOptions::new().prefix(prefix())).await;
    let limits = store.limits();
    assert!(limits.max_batch_bytes < 256 << 10, "{limits:?}");
    assert!(limits.max_payload_bytes < limits.max_batch_bytes, "{limits:?}");
    let stream = StreamId::new("account", "big");
    let json_of = |len: usize| {
        let mut text = vec![b'a'; len];
        text[0] = b'"';
        text[len - 1] = b'"';
        text
    };
    let big = |len: usize| NewEvent {
        event_name: "Big".into(),
        payload: json_of(len),
        ..deposit(0)
    };
    // One payload over.
    let over = store
        .append(&stream, ExpectedVersion::Any, vec![big(limits.max_payload_bytes + 1)])
        .await;
    match over {
        Err(StoreError::LimitExceeded(e)) => {
            assert_eq!((e.limit, e.max), (Limit::PayloadBytes, limits.max_payload_bytes))
        }
        other => panic!("{other:?}"),
    }
    // A batch exactly at its byte limit (name 3 + metadata `{}` 2 per event), then one byte over.
    let a = limits.max_payload_bytes;
    let b = limits.max_batch_bytes - 10 - a;
    let too_many = vec![big(a), big(b + 1)];
    let ids: Vec<Uuid> = too_many.iter().map(|e| e.event_id).collect();
    match store.append(&stream, ExpectedVersion::Any, too_many).await {
        Err(StoreError::LimitExceeded(e)) => assert_eq!(
            (e.limit, e.actual, e.max),
            (Limit::BatchBytes, limits.max_batch_bytes + 1, limits.max_batch_bytes)
        ),
        other => panic!("{other:?}"),
    }
    for id in ids {
        assert!(store.read_event(id).await.expect("read").is_none());
    }
    assert_eq!(store.stream_version(&stream).await.expect("version"), 0);
    let at_limit = store
        .append(&stream, ExpectedVersion::NoStream, vec![big(a), big(b)])
        .await
        .expect("a batch at the limit is stored");
    assert_eq!(at_limit.new_version, 2);
    // Events per batch: at the limit stored, one over refused.
    let tiny = || NewEvent {
        event_name: "N".into(),
        payload: b"1".to_vec(),
        ..deposit(0)
    };
    let many = StreamId::new("account", "many");
    let over: Vec<NewEvent> = (0..=limits.max_batch_events).map(|_| tiny()).collect();
    match store.append(&many, ExpectedVersion::Any, over).await {
        Err(StoreError::LimitExceeded(e)) => assert_eq!(e.limit, Limit::BatchEvents),
        other => panic!("{other:?}"),
    }
    let full: Vec<NewEvent> = (0..limits.max_batch_events).map(|_| tiny()).collect();
    let outcome = bounded("a full batch", store.append(&many, ExpectedVersion::NoStream, full))
        .await
        .expect("a batch of max_batch_events is stored");
    assert_eq!(outcome.new_version, limits.max_batch_events as u64);
    let read: Vec<_> = store
        .read_stream(&many, StreamSlice::all())
        .try_collect()
        .await
        .expect("read back");
    assert_eq!(read.len(), limits.max_batch_events);

    // Lower limits asked for are kept.
    let small = store_on(
        &cluster.url(),
        NatsOptions::new()
            .prefix(prefix())
            .limits(es_core::Limits::DEFAULT.with_max_batch_events(3)),
    )
    .await;
    assert_eq!(small.limits().max_batch_events, 3);
    drop(cluster);
}

/// A read model too large for one message (documented: it must fit) is refused by a typed
/// checkpoint error; the projection's state is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_over_max_payload_fails_its_commit_and_keeps_the_old_state() {
    let cluster = NatsCluster::start_with_max_payload(1, Some(64 << 10)).await;
    let store = store_on(&cluster.url(), NatsOptions::new().prefix(prefix())).await;
    let checkpoints: NatsCheckpoints<Vec<String>> = store.checkpoints().await.expect("checkpoints");
    let mut claim = checkpoints.claim("big").await.expect("claim");
    let (mut unit, at) = checkpoints.begin(&mut claim).await.expect("begin");
    assert_eq!(at, 0);
    checkpoints.context(&mut unit).push("x".repeat(100 << 10));
    let committed = bounded("a commit", checkpoints.commit(unit, 5)).await;
    assert!(committed.is_err(), "{committed:?}");
    assert_eq!(checkpoints.checkpoint("big").await.expect("checkpoint"), 0);
    assert!(checkpoints.model("big").await.expect("model").is_empty());
    // The connection is still usable.
    let (mut unit, _) = checkpoints.begin(&mut claim).await.expect("begin again");
    checkpoints.context(&mut unit).push("small".into());
    checkpoints.commit(unit, 6).await.expect("a small commit");
    assert_eq!(checkpoints.checkpoint("big").await.expect("checkpoint"), 6);
    drop(claim);
    drop(cluster);
}

/// Nothing listening, or a listener that never speaks NATS: a typed `NatsError::Connect`, in
/// bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_typed_error() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        listener.local_addr().expect("addr").port()
    };
    let refused = bounded(
        "connect to a closed port",
        NatsStore::connect(&format!("127.0.0.1:{closed}"), NatsOptions::new()),
    )
    .await;
    match refused {
        Err(error @ NatsError::Connect { .. }) => assert!(error.to_string().contains(&closed.to_string()), "{error}"),
        other => panic!("{other:?}"),
    }
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = silent.local_addr().expect("addr").port();
    let mute = bounded(
        "connect to a silent listener",
        NatsStore::connect(&format!("127.0.0.1:{port}"), NatsOptions::new()),
    )
    .await;
    assert!(matches!(mute, Err(NatsError::Connect { .. })), "{mute:?}");
    drop(silent);
    let invalid = NatsStore::connect("127.0.0.1:1", NatsOptions::new().prefix("a.b")).await;
    assert!(matches!(invalid, Err(NatsError::InvalidOption(_))), "{invalid:?}");
}

/// The server killed and restarted under a store and a running projection: operations fail as
/// `Unavailable` meanwhile, then work again on the same store value; the batch that failed is
/// stored once when retried; the runner rides the outage out and counts each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_use_is_ridden_out() {
    let cluster = NatsCluster::start(1).await;
    let store = store_on(
        &cluster.url(),
        NatsOptions::new()
            .prefix(prefix())
            .request_timeout(Duration::from_secs(2)),
    )
    .await;
    let checkpoints: NatsCheckpoints<Counts> = store.checkpoints().await.expect("checkpoints");
    let options = RunnerOptions {
        poll_interval: Duration::from_millis(100),
        ..RunnerOptions::default()
    };
    let runner = ProjectionRunner::new(Tally, store.clone(), checkpoints.clone())
        .with_name(NAMES[0])
        .with_options(options);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        runner
            .run(PollOnly, async {
                let _ = stopped.await;
            })
            .await
    });
    let stream = StreamId::new("account", "r1");
    store
        .append(&stream, ExpectedVersion::NoStream, vec![deposit(1)])
        .await
        .expect("before");

    cluster.signal(0, "KILL");
    let batch = vec![deposit(2), deposit(3)];
    let during = bounded(
        "an append while the server is down",
        store.append(&stream, ExpectedVersion::Exact(1), batch.clone()),
    )
    .await;
    assert!(matches!(during, Err(StoreError::Unavailable(_))), "{during:?}");
    let read: Result<Vec<_>, _> = bounded(
        "a read while the server is down",
        store.read_stream(&stream, StreamSlice::all()).try_collect(),
    )
    .await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");

    cluster.restart(0);
    let outcome = append_once_back(
        "the append once the server is back",
        &store,
        &stream,
        ExpectedVersion::Exact(1),
        &batch,
    )
    .await;
    assert_eq!(outcome.new_version, 3);
    let again = store
        .append(&stream, ExpectedVersion::Exact(1), batch)
        .await
        .expect("again");
    assert!(again.already_stored);
    let events: Vec<_> = store
        .read_stream(&stream, StreamSlice::all())
        .try_collect()
        .await
        .expect("read");
    assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2, 3]);

    bounded("the runner to catch up", async {
        loop {
            if let Ok(model) = checkpoints.model(NAMES[0]).await {
                if model.per_stream.get("r1") == Some(&3) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let _ = stop.send(());
    let ran = bounded("the runner to stop", running).await.expect("joined");
    assert!(ran.is_ok(), "{ran:?}");
    assert_eq!(checkpoints.model(NAMES[0]).await.expect("model").per_stream["r1"], 3);
    drop(cluster);
}

/// The crate's example, as written (4 partitions, 3 replicas) on a three-node cluster; racing
/// writers; leaders spread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crate_example_runs_on_a_cluster() {
    let cluster = NatsCluster::start(3).await;
    let options = NatsOptions::new().prefix("shop").partitions(4).replicas(3);
    let store = store_on(&cluster.url(), options).await;
    let stream = StreamId::new("ticket", "T-1");
    let opened = NewEvent {
        event_id: Uuid::now_v7(),
        event_name: "TicketOpened".into(),
        schema_version: 1,
        payload: br#"{"title":"Printer on fire"}"#.to_vec(),
        metadata: Metadata::new(),
    };
    store
        .append(&stream, ExpectedVersion::NoStream, vec![opened])
        .await
        .expect("appended");
    let log = store.partition_log(store.partition_of(&stream)).expect("a partition");
    assert_eq!(log.read_all(0, 500).await.expect("page").len(), 1);

    // Eight writers race on one stream at version 1: exactly one wins.
    let racers = (0..8).map(|_| {
        let (store, stream) = (store.clone(), stream.clone());
        tokio::spawn(async move { store.append(&stream, ExpectedVersion::Exact(1), vec![deposit(1)]).await })
    });
    let results = futures_util::future::join_all(racers).await;
    let wins = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Ok(Err(StoreError::Conflict(_)))))
        .count();
    assert_eq!((wins, conflicts), (1, 7), "{results:?}");
    assert_eq!(store.stream_version(&stream).await.expect("version"), 2);

    let leaders = bounded("spread_leaders", store.spread_leaders())
        .await
        .expect("leaders");
    assert!(leaders.iter().all(Option::is_some), "{leaders:?}");
    let mut led: BTreeMap<&str, usize> = BTreeMap::new();
    for leader in leaders.iter().flatten() {
        *led.entry(leader).or_default() += 1;
    }
    assert!(led.values().all(|n| *n <= 2), "{leaders:?}");
    drop(cluster);
}

/// Snapshots of different streams saved at the same time: each save is conditioned on the
/// whole snapshot bucket's last sequence, so unrelated savers contend with each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_snapshots_of_different_streams_all_save() {
    let (cluster, store) = store_on_a_node().await;
    sixteen_at_once("savers", &store, |store, n| async move {
        let stream = StreamId::new("account", format!("s{n}"));
        let mut failures = Vec::new();
        for version in 1..=30u64 {
            if let Err(error) = store.save_snapshot(snapshot(&stream, version, b"{}")).await {
                failures.push(error.to_string());
            }
        }
        failures
    })
    .await;
    for n in 0..16 {
        let stream = StreamId::new("account", format!("s{n}"));
        let snapshot = store.load_snapshot(&stream).await.expect("load").expect("saved");
        assert_eq!(snapshot.version, 30);
    }
    drop(cluster);
}

/// Stream ids at the length limit and with characters that are not subject tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_stream_id_within_the_limit_is_stored() {
    let cluster = NatsCluster::start(1).await;
    let store = store_on(&cluster.url(), NatsOptions::new().prefix(prefix()).partitions(2)).await;
    let max = store.limits().max_stream_id_bytes;
    let ids = [
        StreamId::new("a", "é".repeat((max - 1) / 2)),
        StreamId::new("t".repeat(max / 2), "i".repeat(max - max / 2)),
        StreamId::new("with.dots *and* >", ""),
        StreamId::new("", "$KV.x"),
    ];
    for stream in &ids {
        let outcome = store
            .append(stream, ExpectedVersion::NoStream, vec![deposit(1)])
            .await
            .unwrap_or_else(|e| panic!("{stream}: {e}"));
        let read: Vec<_> = store
            .read_stream(stream, StreamSlice::all())
            .try_collect()
            .await
            .expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].position, outcome.positions[0]);
        assert_eq!(&read[0].stream, stream);
        store
            .save_snapshot(snapshot(stream, 1, b"{}"))
            .await
            .expect("a snapshot");
    }
    let listed = store.list_streams(&StreamQuery::default()).await.expect("listed");
    assert_eq!(listed.len(), ids.len());
    drop(cluster);
}

/// Writers of different streams of one partition at the same time: each append is conditioned
/// on the partition's last sequence, so they contend although their streams are unrelated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_different_streams_all_append() {
    let (cluster, store) = store_on_a_node().await;
    sixteen_at_once("writers", &store, |store, n| async move {
        let stream = StreamId::new("account", format!("w{n}"));
        for version in 0..30u64 {
            if let Err(error) = store
                .append(&stream, ExpectedVersion::Exact(version), vec![deposit(1)])
                .await
            {
                return vec![error.to_string()];
            }
        }
        Vec::new()
    })
    .await;
    drop(cluster);
}

/// Units of different projections committing at the same time: each commit is conditioned on
/// the whole checkpoint bucket's last sequence, so unrelated projections contend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_of_different_projections_all_commit() {
    let (cluster, store) = store_on_a_node().await;
    let checkpoints: NatsCheckpoints<Counts> = store.checkpoints().await.expect("checkpoints");
    sixteen_at_once("committers", &checkpoints, |checkpoints, n| async move {
        let commit_thirty = async {
            let name = format!("p{n}");
            let mut claim = checkpoints.claim(&name).await.map_err(|e| e.to_string())?;
            for position in 1..=30u64 {
                let (unit, _) = checkpoints.begin(&mut claim).await.map_err(|e| e.to_string())?;
                checkpoints.commit(unit, position).await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        };
        commit_thirty.await.err().into_iter().collect()
    })
    .await;
    drop(cluster);
}
