//! Checks of the global log: order, paging, visibility.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use uuid::Uuid;

use super::{append_ok, event, fresh_stream, numbered};
use crate::store::{
    EventStore, ExpectedVersion, GlobalLog, LogFilter, LogPage, NewEvent, RecordedEvent, StoreError, StoreResult,
    StreamId,
};

/// Reads everything, waiting (up to 10 s) until the events with `ids` are visible: a store may
/// delay `read_all` visibility while other transactions are in flight, never reorder it.
pub(crate) async fn read_until_visible<S: EventStore + GlobalLog>(store: &S, ids: &[Uuid]) -> Vec<RecordedEvent> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = read_everything(store).await;
        let seen: BTreeSet<_> = all.iter().map(|e| e.event_id).collect();
        if ids.iter().all(|id| seen.contains(id)) {
            return all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "appended events never became visible to read_all"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn read_everything<S: GlobalLog>(store: &S) -> Vec<RecordedEvent> {
    read_in_pages(store, 500).await
}

/// Pages through the whole log, `page_size` events at a time, checking that each page honours
/// its limit.
async fn read_in_pages<S: GlobalLog>(store: &S, page_size: usize) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .read_all(after, page_size)
            .await
            .unwrap_or_else(|error| panic!("read_all failed: {error}"));
        assert!(page.len() <= page_size, "read_all honours its limit");
        match page.last() {
            Some(last) => after = last.position,
            None => return all,
        }
        all.extend(page);
    }
}

/// `read_all` returns every event once, in position order, interleaving streams as appended.
pub async fn read_all_in_position_order<S: EventStore + GlobalLog>(store: &S) {
    let start = read_everything(store).await.last().map_or(0, |e| e.position);
    let (a, b) = (fresh_stream("conformance"), fresh_stream("conformance"));
    let batches = [numbered(2), numbered(1), numbered(1)];
    let ids: Vec<_> = batches.iter().flatten().map(|e| e.event_id).collect();
    let [first, second, third] = batches;
    append_ok(store, &a, ExpectedVersion::NoStream, first).await;
    append_ok(store, &b, ExpectedVersion::NoStream, second).await;
    append_ok(store, &a, ExpectedVersion::Exact(2), third).await;
    let all = read_until_visible(store, &ids).await;
    assert!(
        all.windows(2).all(|w| w[0].position < w[1].position),
        "strictly increasing positions"
    );
    let ours: Vec<_> = all
        .iter()
        .filter(|e| e.position > start && (e.stream == a || e.stream == b))
        .map(|e| (e.stream.clone(), e.version))
        .collect();
    assert_eq!(ours, [(a.clone(), 1), (a.clone(), 2), (b.clone(), 1), (a, 3)]);
}

/// Paging through `read_all` with `after` and `limit` neither repeats nor skips.
pub async fn read_all_pages<S: EventStore + GlobalLog>(store: &S) {
    let stream = fresh_stream("conformance");
    let batch = numbered(25);
    let ids: Vec<_> = batch.iter().map(|e| e.event_id).collect();
    append_ok(store, &stream, ExpectedVersion::NoStream, batch).await;
    let everything = read_until_visible(store, &ids).await;
    let paged = read_in_pages(store, 7).await;
    assert_eq!(paged, everything);
    let tail = store.read_all(everything[everything.len() - 3].position, 100).await;
    assert_eq!(tail.ok().map(|t| t.len()), Some(2));
}

/// `read_filtered` returns the events of the wanted aggregate types and names, in position
/// order, and pages through everything else: `scanned` counts what it went through, `scanned_to`
/// is where the next page starts, and paging never repeats nor skips a wanted event.
pub async fn read_filtered_leaves_out_by_type_and_name<S: EventStore + GlobalLog>(store: &S) {
    let kind = format!("filtered{}", Uuid::now_v7().simple());
    let (wanted, other) = (fresh_stream(&kind), fresh_stream("conformance-other"));
    let named =
        |names: &[&str]| -> Vec<NewEvent> { names.iter().map(|name| event(name, serde_json::json!({}))).collect() };
    let mine = named(&["Opened", "Noted", "Closed", "Opened", "Noted", "Closed"]);
    let theirs = named(&["Opened", "Opened", "Opened"]);
    let ids: Vec<_> = mine.iter().chain(&theirs).map(|e| e.event_id).collect();
    let start = read_everything(store).await.last().map_or(0, |e| e.position);
    let (mine_first, mine_rest) = (mine[..3].to_vec(), mine[3..].to_vec());
    append_ok(store, &wanted, ExpectedVersion::NoStream, mine_first).await;
    append_ok(store, &other, ExpectedVersion::NoStream, theirs).await;
    append_ok(store, &wanted, ExpectedVersion::Exact(3), mine_rest).await;
    let all = read_until_visible(store, &ids).await;
    let filter = LogFilter::all()
        .aggregate_types([kind.as_str()])
        .excluding_names(["Noted"]);
    let expected: Vec<_> = all
        .iter()
        .filter(|e| e.position > start && filter.matches(&e.stream.aggregate_type, &e.event_name))
        .cloned()
        .collect();
    assert_eq!(expected.len(), 4, "Opened, Closed, Opened, Closed of the wanted stream");

    for page_size in [1, 2, 5, 1000] {
        let (mut after, mut got, mut scanned) = (start, Vec::new(), 0);
        loop {
            let page = store
                .read_filtered(after, page_size, &filter)
                .await
                .unwrap_or_else(|error| panic!("read_filtered failed: {error}"));
            assert!(
                page.scanned <= page_size,
                "read_filtered goes through at most `limit` events"
            );
            assert!(
                page.events.len() <= page.scanned,
                "it returns no more than it went through"
            );
            assert!(page.scanned_to >= after, "scanned_to never goes back");
            if let Some(last) = page.events.last() {
                assert!(
                    last.position <= page.scanned_to,
                    "scanned_to is past the events returned"
                );
            }
            scanned += page.scanned;
            got.extend(page.events);
            after = page.scanned_to;
            if page.at_head {
                break;
            }
        }
        assert_eq!(
            got, expected,
            "pages of {page_size}: the wanted events, once each, in order"
        );
        let total = all.iter().filter(|e| e.position > start).count();
        assert_eq!(
            scanned, total,
            "pages of {page_size}: scanned counts every event went through"
        );
    }
    let everything = store
        .read_filtered(start, 1000, &LogFilter::all())
        .await
        .unwrap_or_else(|error| panic!("read_filtered failed: {error}"));
    let unfiltered: Vec<_> = all.into_iter().filter(|e| e.position > start).collect();
    assert_eq!(
        everything.events, unfiltered,
        "an open filter returns what read_all does"
    );
}

/// Every page of `read_filtered`, for every filter and limit, is what filtering the same
/// `read_all` page after the fact gives ([`LogPage::filter_read`]): the same events, the limit
/// counted over every row, the same `scanned_to` and `at_head`. Types and names that need
/// escaping are matched as written; a read beyond every position is empty and at the head.
pub async fn read_filtered_pages_are_read_all_pages_filtered<S: EventStore + GlobalLog>(store: &S) {
    let start = read_everything(store).await.last().map_or(0, |e| e.position);
    let streams = [
        fresh_stream("case"),
        fresh_stream("ticket"),
        fresh_stream("quote\"d 'type'"),
    ];
    let names = ["Opened", "Noted", "Closed \"quoted\""];
    let mut ids = Vec::new();
    for round in 0..4 {
        for (i, stream) in streams.iter().enumerate() {
            let appended = event(names[(round + i) % names.len()], serde_json::json!({}));
            ids.push(appended.event_id);
            append_ok(store, stream, ExpectedVersion::Any, vec![appended]).await;
        }
    }
    read_until_visible(store, &ids).await;
    let filters = [
        LogFilter::all(),
        LogFilter::all().aggregate_types(["case"]),
        LogFilter::all().aggregate_types(["ticket", "quote\"d 'type'"]),
        LogFilter::all().excluding_names(["Noted"]),
        LogFilter::all()
            .aggregate_types(["case", "quote\"d 'type'"])
            .excluding_names(["Opened", "Closed \"quoted\""]),
        LogFilter::all().aggregate_types(["nobody"]),
        LogFilter::all().names(["Noted", "Closed \"quoted\""]),
        LogFilter::all().aggregate_types(["ticket"]).names(["Opened"]),
        LogFilter::all().names(["Opened", "Noted"]).excluding_names(["Noted"]),
    ];
    for filter in &filters {
        for limit in [1, 2, 5, 12, 13, 100] {
            let mut after = start;
            loop {
                let page = must_read(store.read_filtered(after, limit, filter).await, "read_filtered", after);
                let unfiltered = must_read(store.read_all(after, limit).await, "read_all", after);
                let expected = LogPage::filter_read(after, limit, unfiltered, filter);
                assert_eq!(page, expected, "{filter:?}, limit {limit}, after {after}");
                if page.at_head {
                    break;
                }
                after = page.scanned_to;
            }
        }
    }
    let beyond = store.read_filtered(u64::MAX, 10, &filters[1]).await;
    assert!(
        matches!(&beyond, Ok(page) if (page.scanned, page.scanned_to, page.at_head) == (0, u64::MAX, true)),
        "{beyond:?}"
    );
}

fn must_read<T>(result: StoreResult<T>, what: &str, after: u64) -> T {
    result.unwrap_or_else(|error| panic!("{what} after {after} failed: {error}"))
}

/// `replay_all` lends what `read_filtered` returns, whole (ids, stream, version, name, schema
/// version, payload, metadata, timestamp), in position order, up to where `read_all` ends; a
/// callback that breaks stops it at that event.
pub async fn replay_all_lends_what_read_filtered_returns<S: EventStore + GlobalLog>(store: &S) {
    let start = read_everything(store).await.last().map_or(0, |e| e.position);
    let streams = [fresh_stream("replayed"), fresh_stream("passed")];
    let mut ids = Vec::new();
    for round in 0..6 {
        for stream in &streams {
            let mut batch = numbered(2);
            batch[1].event_name = "Other".into();
            batch[0].metadata = crate::metadata::Metadata::new()
                .with_actor(format!("round {round}"))
                .with_extra("round", round);
            ids.extend(batch.iter().map(|e| e.event_id));
            append_ok(store, stream, ExpectedVersion::Any, batch).await;
        }
    }
    read_until_visible(store, &ids).await;
    let filters = [
        LogFilter::all(),
        LogFilter::all().aggregate_types([streams[0].aggregate_type.as_str()]),
        LogFilter::all().excluding_names(["Other"]),
    ];
    for filter in &filters {
        let mut lent = Vec::new();
        let replay = store
            .replay_all(start, filter, &mut |event| {
                lent.push(event.to_recorded());
                std::ops::ControlFlow::Continue(())
            })
            .await
            .unwrap_or_else(|error| panic!("replay_all failed: {error}"));
        let mut expected = Vec::new();
        let mut after = start;
        loop {
            let page = must_read(store.read_filtered(after, 7, filter).await, "read_filtered", after);
            expected.extend(page.events);
            after = page.scanned_to;
            if page.at_head {
                break;
            }
        }
        assert_eq!(lent, expected, "{filter:?}");
        assert!(!replay.stopped);
        assert_eq!(replay.scanned_to, after, "{filter:?}: the replay got to the end");
        assert!(replay.scanned >= lent.len() as u64);

        // Stopped at the third event lent: that event is the last one, and where it got to.
        let mut seen = Vec::new();
        let stopped = store
            .replay_all(start, filter, &mut |event| {
                seen.push(event.position);
                if seen.len() == 3 {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            })
            .await
            .unwrap_or_else(|error| panic!("replay_all failed: {error}"));
        assert_eq!(seen.len(), 3, "{filter:?}");
        assert!(stopped.stopped);
        assert_eq!(stopped.scanned_to, seen[2]);
        // Going on from there lends the rest.
        let mut rest = Vec::new();
        store
            .replay_all(stopped.scanned_to, filter, &mut |event| {
                rest.push(event.position);
                std::ops::ControlFlow::Continue(())
            })
            .await
            .unwrap_or_else(|error| panic!("replay_all failed: {error}"));
        let all: Vec<u64> = seen.iter().chain(&rest).copied().collect();
        assert_eq!(
            all,
            expected.iter().map(|e| e.position).collect::<Vec<_>>(),
            "{filter:?}"
        );
    }
}

/// `read_filtered` decodes only the rows its filter wants: a row nobody reading wants cannot
/// fail the read, and is still counted as scanned; `read_all`, and a filter that wants the row,
/// get [`StoreError::Corrupt`] naming it.
///
/// Not in [`conformance_tests!`](crate::conformance_tests): storing a row that does not decode
/// takes the backend's own means. `plant(stream)` stores, bypassing the store's checks, one
/// event of `stream` at version 1, named `TicketOpened`, whose metadata does not decode. The
/// check appends an event before it and one after it, and expects no one else to append to
/// the store meanwhile.
pub async fn a_row_left_out_is_never_decoded<S, F, Fut>(store: &S, plant: F)
where
    S: EventStore + GlobalLog,
    F: FnOnce(StreamId) -> Fut,
    Fut: Future<Output = ()>,
{
    let start = read_everything(store).await.last().map_or(0, |e| e.position);
    let (case, ticket) = (fresh_stream("case"), fresh_stream("ticket"));
    let opened = event("CaseOpened", serde_json::json!({}));
    append_ok(store, &case, ExpectedVersion::NoStream, vec![opened]).await;
    plant(ticket.clone()).await;
    let noted = event("NoteAdded", serde_json::json!({}));
    append_ok(store, &case, ExpectedVersion::Exact(1), vec![noted]).await;
    tail_reaches(store, start, 3).await;
    assert!(
        matches!(store.read_all(start, 10).await, Err(StoreError::Corrupt { .. })),
        "the planted row's metadata does not decode"
    );

    for filter in [
        LogFilter::all().aggregate_types(["case"]),
        LogFilter::all().excluding_names(["TicketOpened"]),
        LogFilter::all()
            .aggregate_types(["case", "ticket"])
            .excluding_names(["TicketOpened"]),
    ] {
        let page = must_read(store.read_filtered(start, 10, &filter).await, "read_filtered", start);
        let names: Vec<&str> = page.events.iter().map(|e| e.event_name.as_str()).collect();
        assert_eq!(names, ["CaseOpened", "NoteAdded"], "{filter:?}");
        assert_eq!(
            (page.scanned, page.at_head),
            (3, true),
            "{filter:?}: the row passed over"
        );
        assert_eq!(page.scanned_to, page.events[1].position, "{filter:?}");
    }
    // A page that ends on the row left out gets past it.
    let cases = LogFilter::all().aggregate_types(["case"]);
    let first = must_read(store.read_filtered(start, 2, &cases).await, "read_filtered", start);
    assert_eq!((first.events.len(), first.scanned, first.at_head), (1, 2, false));
    assert!(first.scanned_to > first.events[0].position, "past the planted row");

    for filter in [
        LogFilter::all().aggregate_types(["ticket"]),
        LogFilter::all().excluding_names(["NoteAdded"]),
    ] {
        match store.read_filtered(start, 10, &filter).await {
            Err(StoreError::Corrupt {
                stream,
                version,
                reason,
            }) => {
                assert_eq!((&stream, version), (&ticket, 1), "{filter:?}");
                assert!(reason.contains("metadata"), "{filter:?}: {reason}");
            }
            other => panic!("{filter:?}: expected Corrupt, got {other:?}"),
        }
    }
}

/// Waits (up to 60 s) until `tail(after)` counts `count` events: a store may delay what
/// `read_all` sees while other transactions are in flight. `tail` decodes nothing.
async fn tail_reaches<S: GlobalLog>(store: &S, after: u64, count: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let tail = must_read(store.tail(after).await, "tail", after);
        if tail.events >= count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {count} events became readable",
            tail.events
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
