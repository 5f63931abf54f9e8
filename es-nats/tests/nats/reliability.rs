//! Node loss and pause on a three-node cluster of its own, under eight writers and a tailing
//! reader per partition: the node leading a partition is killed (SIGKILL, then restarted) or
//! paused (SIGSTOP for longer than an election, then SIGCONT) while they work.
//!
//! Afterwards: every acknowledged event is stored exactly once, no event of a refused append is
//! stored, each stream's versions are 1..n, what the tailing readers saw of each partition is
//! its log read again from the start (a rebuild), and every replica is current again. The
//! figures (errors seen by writers, longest append, time to catch up) are printed for
//! docs/RELIABILITY.md.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use es_core::conformance::numbered;
use es_core::{EventStore, ExpectedVersion, GlobalLog, RecordedEvent, StoreError, StreamId, StreamSlice};
use es_nats::{NatsOptions, NatsStore, PartitionLog};
use futures_util::TryStreamExt;
use uuid::Uuid;

use crate::support::unique_prefix;
use es_test_support::nats::NatsCluster;

const WRITERS: usize = 8;
const PARTITIONS: u32 = 2;

/// What is done to the leader of partition 0.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL, then a restart after a while.
    Kill,
    /// SIGSTOP for this long, then SIGCONT.
    Pause(Duration),
}

/// What one writer did.
#[derive(Debug, Default)]
struct Written {
    stream: Option<StreamId>,
    /// The acknowledged batches' ids, in order.
    acked: Vec<Uuid>,
    /// Ids of batches refused with a typed error (none expected: each writer owns its stream).
    refused: Vec<Uuid>,
    transient_errors: usize,
    longest_append: Duration,
}

async fn write(store: NatsStore, writer: usize, stop: Arc<AtomicBool>) -> Written {
    let stream = StreamId::new("writer", format!("w{writer}-{}", Uuid::now_v7()));
    let mut written = Written {
        stream: Some(stream.clone()),
        ..Written::default()
    };
    let mut version = 0;
    while !stop.load(Ordering::Relaxed) {
        let batch = numbered(2);
        let ids: Vec<Uuid> = batch.iter().map(|event| event.event_id).collect();
        let started = Instant::now();
        // The same batch, at the same expected version, until it is acknowledged: a retry of an
        // append that committed gets its original outcome.
        loop {
            match store
                .append(&stream, ExpectedVersion::Exact(version), batch.clone())
                .await
            {
                Ok(outcome) => {
                    version = outcome.new_version;
                    written.acked.extend(&ids);
                    break;
                }
                Err(error) if error.is_transient() => {
                    written.transient_errors += 1;
                    assert!(
                        started.elapsed() < Duration::from_secs(45),
                        "writer {writer} could not append for 45 s: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(StoreError::Conflict(conflict)) => {
                    written.refused.extend(&ids);
                    version = conflict.actual;
                    break;
                }
                Err(error) => panic!("writer {writer}: an append failed for good: {error}"),
            }
        }
        written.longest_append = written.longest_append.max(started.elapsed());
    }
    written
}

/// Tails a partition's log until told the writers are done, then reads to its head.
async fn tail(log: PartitionLog, stop: Arc<AtomicBool>) -> Vec<RecordedEvent> {
    let mut seen: Vec<RecordedEvent> = Vec::new();
    let mut after = 0;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        match log.read_all(after, 200).await {
            Ok(page) if page.is_empty() => {
                if stopping {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(page) => {
                after = page.last().map_or(after, |event| event.position);
                seen.extend(page);
            }
            Err(error) if error.is_transient() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(error) => panic!("tailing partition {}: {error}", log.partition()),
        }
    }
}

/// The value of `read` once it succeeds, trying again on transient errors for up to 30 s (a
/// resumed node may trigger elections while the results are checked).
async fn retrying<T, F, Fut>(read: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match read().await {
            Ok(value) => return value,
            Err(error) if error.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("reading the results: {error}"),
        }
    }
}

/// The node (index) leading `stream`, as JetStream reports it.
async fn leader(context: &async_nats::jetstream::Context, stream: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(info) = context.get_stream(stream).await.map(|s| s.cached_info().clone()) {
            if let Some(name) = info.cluster.and_then(|cluster| cluster.leader) {
                if let Some(index) = name.strip_prefix('n').and_then(|n| n.parse().ok()) {
                    return index;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader for {stream}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every replica of `stream` is current; returns how long that took.
async fn caught_up(context: &async_nats::jetstream::Context, stream: &str) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(info) = context.get_stream(stream).await.map(|s| s.cached_info().clone()) {
            if let Some(cluster) = info.cluster {
                let followers_current =
                    cluster.replicas.len() == 2 && cluster.replicas.iter().all(|peer| peer.current && !peer.offline);
                if cluster.leader.is_some() && followers_current {
                    return started.elapsed();
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the replicas of {stream} did not catch up within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn under(fault: Fault) {
    let cluster = NatsCluster::start(3).await;
    let options = NatsOptions::new()
        .prefix(unique_prefix())
        .partitions(PARTITIONS)
        .replicas(3)
        .request_timeout(Duration::from_secs(2));
    let store = NatsStore::connect(&cluster.url(), options)
        .await
        .expect("a store on the cluster");
    let prefix = store.options().prefix_name().to_owned();
    let servers: Vec<String> = cluster.url().split(',').map(str::to_owned).collect();
    let admin = async_nats::jetstream::new(async_nats::connect(servers.as_slice()).await.expect("a client"));

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| tokio::spawn(write(store.clone(), writer, Arc::clone(&stop))))
        .collect();
    let writers_done = Arc::new(AtomicBool::new(false));
    let tailers: Vec<_> = store
        .partition_logs()
        .into_iter()
        .map(|log| tokio::spawn(tail(log, Arc::clone(&writers_done))))
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim_stream = format!("{prefix}_events_0");
    let victim = leader(&admin, &victim_stream).await;
    let faulted = Instant::now();
    match fault {
        Fault::Kill => {
            cluster.signal(victim, "KILL");
            tokio::time::sleep(Duration::from_secs(5)).await;
            cluster.restart(victim);
        }
        Fault::Pause(pause) => {
            cluster.signal(victim, "STOP");
            tokio::time::sleep(pause).await;
            cluster.signal(victim, "CONT");
        }
    }
    // How long until every replica of every partition is current again, from the restart or
    // the resume, while the writers go on.
    let recovery = {
        let (admin, prefix) = (admin.clone(), prefix.clone());
        tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            for partition in 0..PARTITIONS {
                longest = longest.max(caught_up(&admin, &format!("{prefix}_events_{partition}")).await);
            }
            longest
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut written = Vec::new();
    for writer in writers {
        written.push(writer.await.expect("a writer"));
    }
    writers_done.store(true, Ordering::Relaxed);
    let mut tailed = Vec::new();
    for tailer in tailers {
        tailed.push(tailer.await.expect("a tailer"));
    }
    let catch_up = recovery.await.expect("the recovery measure");

    // Each stream: versions 1..n, exactly the acknowledged events in order, nothing refused.
    let mut acked = BTreeSet::new();
    for writer in &written {
        let stream = writer.stream.as_ref().expect("a writer's stream");
        let stored: Vec<RecordedEvent> =
            retrying(|| async { store.read_stream(stream, StreamSlice::all()).try_collect().await }).await;
        let versions: Vec<u64> = stored.iter().map(|event| event.version).collect();
        assert_eq!(
            versions,
            (1..=stored.len() as u64).collect::<Vec<_>>(),
            "{stream}: versions 1..n"
        );
        let ids: Vec<Uuid> = stored.iter().map(|event| event.event_id).collect();
        assert_eq!(
            ids, writer.acked,
            "{stream}: exactly the acknowledged events, once each"
        );
        assert!(
            writer.refused.iter().all(|id| !ids.contains(id)),
            "{stream}: nothing refused stored"
        );
        acked.extend(ids);
    }
    // Each partition: what the tailing reader saw is the log read again from the start.
    let mut logged = BTreeSet::new();
    for (log, seen) in store.partition_logs().into_iter().zip(&tailed) {
        let mut rebuilt = Vec::new();
        let mut after = 0;
        loop {
            let page = retrying(|| log.read_all(after, 500)).await;
            let Some(last) = page.last() else { break };
            after = last.position;
            rebuilt.extend(page);
        }
        let rebuilt_ids: Vec<Uuid> = rebuilt.iter().map(|event| event.event_id).collect();
        let seen_ids: Vec<Uuid> = seen.iter().map(|event| event.event_id).collect();
        if seen_ids != rebuilt_ids {
            let at = seen_ids.iter().zip(&rebuilt_ids).position(|(a, b)| a != b);
            let missing = rebuilt_ids.iter().filter(|id| !seen_ids.contains(id)).count();
            let extra = seen_ids.len() + missing - rebuilt_ids.len();
            let positions = |events: &[RecordedEvent], at: usize| {
                events[at.saturating_sub(2)..(at + 3).min(events.len())]
                    .iter()
                    .map(|event| event.position >> 16)
                    .collect::<Vec<_>>()
            };
            panic!(
                "partition {}: the tail ({} events) differs from a rebuild ({}) first at {at:?}: {missing} \
                 missing, {extra} extra; sequences there: tail {:?}, rebuild {:?}",
                log.partition(),
                seen_ids.len(),
                rebuilt_ids.len(),
                at.map(|at| positions(seen, at)),
                at.map(|at| positions(&rebuilt, at)),
            );
        }
        for id in rebuilt_ids {
            assert!(logged.insert(id), "an event in the logs once");
        }
    }
    assert_eq!(logged, acked, "the logs hold exactly the acknowledged events");

    let events: usize = written.iter().map(|writer| writer.acked.len()).sum();
    let errors: usize = written.iter().map(|writer| writer.transient_errors).sum();
    let refused: usize = written.iter().map(|writer| writer.refused.len() / 2).sum();
    let longest = written
        .iter()
        .map(|writer| writer.longest_append)
        .max()
        .unwrap_or_default();
    eprintln!(
        "FIGURES {fault:?}: node n{victim} (leader of partition 0) hit after 1.5 s; {events} events \
         acknowledged by {WRITERS} writers; {errors} transient errors retried; {refused} appends refused; \
         longest append (with retries) {longest:?}; every replica current {catch_up:?} after the node came back; checked {:?} after the fault",
        faulted.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_partition_leader_loses_no_acknowledged_event() {
    under(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_partition_leader_past_an_election_loses_no_acknowledged_event() {
    under(Fault::Pause(Duration::from_secs(8))).await;
}
