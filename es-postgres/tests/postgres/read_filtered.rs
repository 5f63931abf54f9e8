//! `read_filtered` reads `read_all`'s page, but decodes only the rows the filter wants: a row
//! nobody reading wants cannot fail the read.

use std::time::{Duration, Instant};

use es_core::{EventStore, ExpectedVersion, GlobalLog, LogFilter, LogPage, StoreError, StreamId};
use es_postgres::PostgresStore;

use crate::support::{event, fresh_stream, schema, RawEvent};

/// Waits until `read_all` would return `count` events of the store (other tests' open
/// transactions can hold the newest back for a while). Counts with `tail`, which decodes
/// nothing.
async fn visible(store: &PostgresStore, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tail = store.tail(0).await.expect("tail");
        if tail.events >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} events are readable",
            tail.events
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn append(store: &PostgresStore, stream: &StreamId, name: &str) {
    store
        .append(stream, ExpectedVersion::Any, vec![event(name, serde_json::json!({}))])
        .await
        .expect("append");
}

async fn filtered(store: &PostgresStore, after: u64, limit: usize, filter: &LogFilter) -> LogPage {
    store.read_filtered(after, limit, filter).await.expect("read_filtered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_left_out_is_never_decoded() {
    let schema = schema().await;
    let case = fresh_stream("case");
    append(&schema, &case, "CaseOpened").await;
    let ticket = fresh_stream("ticket");
    let corrupt = RawEvent {
        metadata: r#"{"actor": 7}"#,
        ..RawEvent::new(&ticket, 1, "TicketOpened")
    };
    corrupt.insert(&schema, schema.pool()).await;
    append(&schema, &case, "NoteAdded").await;
    visible(&schema, 3).await;
    assert!(
        matches!(schema.read_all(0, 10).await, Err(StoreError::Corrupt { .. })),
        "the ticket's metadata does not decode"
    );

    for filter in [
        LogFilter::all().aggregate_types(["case"]),
        LogFilter::all().excluding_names(["TicketOpened"]),
        LogFilter::all()
            .aggregate_types(["case", "ticket"])
            .excluding_names(["TicketOpened"]),
    ] {
        let page = filtered(&schema, 0, 10, &filter).await;
        let names: Vec<&str> = page.events.iter().map(|e| e.event_name.as_str()).collect();
        assert_eq!(names, ["CaseOpened", "NoteAdded"], "{filter:?}");
        assert_eq!(
            (page.scanned, page.at_head),
            (3, true),
            "{filter:?}: the ticket was passed over"
        );
        assert_eq!(page.scanned_to, page.events[1].position, "{filter:?}");
    }
    // A page that ends on the row left out gets past it.
    let first = filtered(&schema, 0, 2, &LogFilter::all().aggregate_types(["case"])).await;
    assert_eq!((first.events.len(), first.scanned, first.at_head), (1, 2, false));
    assert!(first.scanned_to > first.events[0].position, "the ticket's position");

    for filter in [
        LogFilter::all().aggregate_types(["ticket"]),
        LogFilter::all().excluding_names(["NoteAdded"]),
    ] {
        match schema.read_filtered(0, 10, &filter).await {
            Err(StoreError::Corrupt {
                stream,
                version,
                reason,
            }) => {
                assert_eq!((stream, version), (ticket.clone(), 1), "{filter:?}");
                assert!(reason.contains("metadata"), "{reason}");
            }
            other => panic!("{filter:?}: expected Corrupt, got {other:?}"),
        }
    }
}
