//! `read_filtered` reads `read_all`'s page, but decodes only the rows the filter wants: a row
//! nobody reading wants cannot fail the read.

use es_core::{EventStore, ExpectedVersion, GlobalLog, LogFilter, LogPage, StoreError, StreamId};
use es_sqlite::SqliteStore;

use crate::support::{event, fresh, fresh_stream, raw};

async fn append(store: &SqliteStore, stream: &StreamId, name: &str) {
    store
        .append(stream, ExpectedVersion::Any, vec![event(name, serde_json::json!({}))])
        .await
        .expect("append");
}

async fn filtered(store: &SqliteStore, after: u64, limit: usize, filter: &LogFilter) -> LogPage {
    store.read_filtered(after, limit, filter).await.expect("read_filtered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_left_out_is_never_decoded() {
    let db = fresh().await;
    let case = fresh_stream("case");
    append(&db.store, &case, "CaseOpened").await;
    let ticket = fresh_stream("ticket");
    raw(&db)
        .execute(
            "INSERT INTO events (event_id, aggregate_type, aggregate_id, version, event_name, schema_version,
                                 payload, metadata, recorded_at)
             VALUES (?1, ?2, ?3, 1, 'TicketOpened', 1, '{}', 'not json', 0)",
            rusqlite::params![
                uuid::Uuid::now_v7().as_bytes(),
                ticket.aggregate_type,
                ticket.aggregate_id
            ],
        )
        .expect("plant a row whose metadata does not decode");
    append(&db.store, &case, "NoteAdded").await;
    assert!(
        matches!(db.store.read_all(0, 10).await, Err(StoreError::Corrupt { .. })),
        "the ticket's metadata does not decode"
    );

    for filter in [
        LogFilter::all().aggregate_types(["case"]),
        LogFilter::all().excluding_names(["TicketOpened"]),
        LogFilter::all()
            .aggregate_types(["case", "ticket"])
            .excluding_names(["TicketOpened"]),
    ] {
        let page = filtered(&db.store, 0, 10, &filter).await;
        let names: Vec<&str> = page.events.iter().map(|e| e.event_name.as_str()).collect();
        assert_eq!(names, ["CaseOpened", "NoteAdded"], "{filter:?}");
        assert_eq!(
            (page.scanned, page.scanned_to, page.at_head),
            (3, 3, true),
            "{filter:?}"
        );
    }
    // A page that ends on the row left out gets past it.
    let first = filtered(&db.store, 0, 2, &LogFilter::all().aggregate_types(["case"])).await;
    assert_eq!(
        (first.events.len(), first.scanned, first.scanned_to, first.at_head),
        (1, 2, 2, false)
    );

    for filter in [
        LogFilter::all().aggregate_types(["ticket"]),
        LogFilter::all().excluding_names(["NoteAdded"]),
    ] {
        match db.store.read_filtered(0, 10, &filter).await {
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
