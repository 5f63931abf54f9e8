//! Stores with several partitions: streams spread by aggregate id, each partition's log a
//! total order of its own streams' events; the stream checks of the conformance suite pass.

/// The conformance suite's stream, idempotency, limit, snapshot and catalog checks on a
/// store of four partitions (on the single node: how streams are spread does not depend on
/// replication, and the cluster suite covers replication). Its global-log checks (and
/// `refused_batch_writes_nothing`, which reads the global log) are not run here: they need one
/// total order: see the tests below for what holds per partition instead.
mod four_partitions {
    es_core::conformance_tests!(@each crate::support::fresh_store(crate::support::single().await, 4), |store| store
        => |store| [es_core::conformance](&store);
        append_then_read_stream,
        no_stream_expectation,
        exact_expectation,
        stream_exists_expectation,
        any_expectation,
        empty_append_checks_expectation,
        duplicate_event_id_writes_nothing,
        retried_append_returns_the_original_outcome,
        a_batch_stored_otherwise_is_not_a_retry,
        read_event_by_id,
        invalid_payload_writes_nothing,
        concurrent_appends_exactly_one_wins,
        streams_are_isolated,
        read_stream_slices,
        read_stream_until_instant,
        replay_lends_what_read_stream_returns,
        snapshots_keep_the_latest,
        older_snapshots_are_upcast,
        retired_events_are_replaced_by_their_rules,
        list_streams_filters_and_pages,
        list_snapshots_in_pages,
    );
}

use std::collections::{BTreeMap, BTreeSet};

use es_core::conformance::{event, whole_stream};
use es_core::{EventStore, ExpectedVersion, GlobalLog, StoreError, StreamId};

use crate::support::{fresh_store, single, trio};

/// The semantic that replaces the single global order on a partitioned store: every event is
/// in exactly one partition's log (its stream's partition), each log is a total order
/// (strictly increasing positions) that keeps each stream's version order, and the store as
/// a whole refuses to pretend it has one log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_partition_has_a_total_order_of_its_own_streams() {
    let store = fresh_store(single().await, 4).await;
    let streams: Vec<StreamId> = (0..24).map(|n| StreamId::new("spread", format!("s-{n}"))).collect();
    let mut appended = BTreeSet::new();
    for round in 0..3 {
        for stream in &streams {
            let batch = vec![event("Ticked", serde_json::json!({ "round": round })); 2]
                .into_iter()
                .map(|mut e| {
                    e.event_id = uuid::Uuid::now_v7();
                    e
                })
                .collect::<Vec<_>>();
            appended.extend(batch.iter().map(|e| e.event_id));
            store
                .append(stream, ExpectedVersion::Exact(round * 2), batch)
                .await
                .expect("an append to a fresh stream");
        }
    }
    let used: BTreeSet<u32> = streams.iter().map(|stream| store.partition_of(stream)).collect();
    assert!(used.len() > 1, "24 streams spread over more than one of 4 partitions");

    let mut seen = BTreeSet::new();
    for log in store.partition_logs() {
        let events = log.read_all(0, 10_000).await.expect("a partition's log");
        assert!(
            events.windows(2).all(|w| w[0].position < w[1].position),
            "partition {}: strictly increasing positions",
            log.partition()
        );
        let mut versions: BTreeMap<&StreamId, u64> = BTreeMap::new();
        for event in &events {
            assert_eq!(
                store.partition_of(&event.stream),
                log.partition(),
                "an event in its stream's partition"
            );
            let last = versions.insert(&event.stream, event.version).unwrap_or(0);
            assert_eq!(event.version, last + 1, "a stream's versions in position order");
            assert!(seen.insert(event.event_id), "an event in one partition only, once");
        }
        // Paging by position inside a partition returns the same events.
        let mut paged = Vec::new();
        let mut after = 0;
        loop {
            let page = log.read_all(after, 5).await.expect("a page of a partition's log");
            let Some(last) = page.last() else { break };
            after = last.position;
            paged.extend(page.into_iter().map(|e| e.event_id));
        }
        assert_eq!(paged, events.iter().map(|e| e.event_id).collect::<Vec<_>>());
    }
    assert_eq!(seen, appended, "every appended event is in some partition's log");

    match store.read_all(0, 10).await {
        Err(StoreError::Backend(error)) => assert!(error.to_string().contains("partition_logs")),
        other => panic!("a partitioned store has no single log: {other:?}"),
    }
}

/// Eight writers race on one stream of the three-node cluster, each appending at the version
/// it last read: every append that succeeded is stored once, at the versions it was told, and
/// none that failed is stored. (nats-server 2.9 checks `Nats-Expected-Last-Subject-Sequence`
/// of messages still in flight in Raft loosely; the store's stream-wide condition is exact.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_on_a_cluster_never_both_win() {
    let store = fresh_store(trio().await, 1).await;
    let stream = StreamId::new("race", uuid::Uuid::now_v7().to_string());
    let mut writers = Vec::new();
    for writer in 0..8 {
        let (store, stream) = (store.clone(), stream.clone());
        writers.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for _ in 0..15 {
                let version = store.stream_version(&stream).await.expect("a version");
                let fresh = event("Raced", serde_json::json!({ "writer": writer }));
                let id = fresh.event_id;
                match store
                    .append(&stream, ExpectedVersion::Exact(version), vec![fresh])
                    .await
                {
                    Ok(outcome) => won.push((id, outcome.new_version)),
                    Err(StoreError::Conflict(_)) => {}
                    Err(error) => panic!("an append failed otherwise than by a conflict: {error}"),
                }
            }
            won
        }));
    }
    let mut won = Vec::new();
    for writer in writers {
        won.extend(writer.await.expect("a writer"));
    }
    let stored = whole_stream(&store, &stream).await;
    let versions: Vec<u64> = stored.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=stored.len() as u64).collect::<Vec<_>>(), "versions 1..n");
    won.sort_by_key(|(_, version)| *version);
    let stored_ids: Vec<_> = stored.iter().map(|e| (e.event_id, e.version)).collect();
    assert_eq!(won, stored_ids, "exactly the appends that succeeded, at their versions");
}

/// An append that committed but whose index entries were lost (its server died in between)
/// is still recognised when retried within the deduplication window: the server remembers the
/// batch's message id, the original outcome comes back, and the index is written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_whose_index_was_lost_gets_the_original_outcome() {
    for cluster in [single().await, trio().await] {
        let store = fresh_store(cluster, 1).await;
        let stream = StreamId::new("lost", uuid::Uuid::now_v7().to_string());
        let batch = es_core::conformance::numbered(2);
        let first = store
            .append(&stream, ExpectedVersion::NoStream, batch.clone())
            .await
            .expect("a first append");
        let servers: Vec<String> = cluster.url().split(',').map(str::to_owned).collect();
        let client = async_nats::connect(servers.as_slice()).await.expect("a client");
        let index = async_nats::jetstream::new(client)
            .get_stream(format!("KV_{}_event_ids", store.options().prefix_name()))
            .await
            .expect("the index stream");
        index.purge().await.expect("losing the index");
        assert!(store.read_event(batch[0].event_id).await.expect("a read").is_none());

        let retried = store
            .append(&stream, ExpectedVersion::NoStream, batch.clone())
            .await
            .expect("a retried append");
        assert!(retried.already_stored, "recognised as a retry");
        assert_eq!(
            (retried.previous_version, retried.new_version, retried.positions),
            (0, 2, first.positions)
        );
        assert!(
            store.read_event(batch[1].event_id).await.expect("a read").is_some(),
            "indexed again"
        );
        assert_eq!(whole_stream(&store, &stream).await.len(), 2, "nothing written twice");
    }
}

/// Three partitions on three nodes end up led by three different nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_of_the_partitions_are_spread_over_the_nodes() {
    let store = fresh_store(trio().await, 3).await;
    let leaders = store.spread_leaders().await.expect("spreading the leaders");
    let distinct: BTreeSet<_> = leaders.iter().flatten().collect();
    assert_eq!(distinct.len(), 3, "one partition led by each node: {leaders:?}");
    let stream = StreamId::new("spread", "after");
    store
        .append(&stream, ExpectedVersion::NoStream, es_core::conformance::numbered(1))
        .await
        .expect("an append once the leaders moved");
}

/// Messages the store did not write (garbage, a missing or absurd version header) on a
/// stream's subject are reported as a backend failure when read, never a panic, and do not
/// hide the stream's other events from an append's check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_messages_are_errors_not_panics() {
    let cluster = single().await;
    let store = fresh_store(cluster, 1).await;
    let client = async_nats::connect(cluster.url()).await.expect("a client");
    let context = async_nats::jetstream::new(client);
    let prefix = store.options().prefix_name().to_owned();
    for (n, version) in [None, Some("not a number"), Some("18446744073709551615"), Some("1")]
        .into_iter()
        .enumerate()
    {
        let stream = StreamId::new("foreign", format!("f{n}"));
        // The store's subject for the stream: `P.e.0.x<type>.x<id>` in base64.
        let tokens = |text: &str| {
            use base64::Engine as _;
            format!("x{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text))
        };
        let subject = format!("{prefix}.e.0.{}.{}", tokens("foreign"), tokens(&format!("f{n}")));
        let mut headers = async_nats::HeaderMap::new();
        if let Some(version) = version {
            headers.insert("Es-Version", version);
        }
        context
            .publish_with_headers(subject, headers, "garbage".into())
            .await
            .expect("a publish")
            .await
            .expect("stored");
        let read: Result<Vec<_>, _> =
            futures_util::TryStreamExt::try_collect(store.read_stream(&stream, es_core::StreamSlice::all())).await;
        assert!(
            matches!(read, Err(StoreError::Backend(_))),
            "reading {stream}: {read:?}"
        );
        assert!(store.read_all(0, 100).await.is_err(), "the log holds a foreign message");
        let appended = store
            .append(&stream, ExpectedVersion::Any, es_core::conformance::numbered(1))
            .await;
        assert!(
            appended.is_ok() || matches!(appended, Err(StoreError::Backend(_))),
            "{appended:?}"
        );
    }
}
