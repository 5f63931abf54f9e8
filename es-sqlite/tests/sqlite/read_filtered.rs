//! `read_filtered` reads `read_all`'s page, but decodes only the rows the filter wants: a row
//! nobody reading wants cannot fail the read. The check is es-core's; the row whose metadata
//! does not decode is inserted with SQL.

use crate::support::{fresh, raw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_left_out_is_never_decoded() {
    let db = &fresh().await;
    es_core::conformance::a_row_left_out_is_never_decoded(&db.store, |ticket| async move {
        raw(db)
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
    })
    .await;
}
