//! `read_filtered` reads `read_all`'s page, but decodes only the rows the filter wants: a row
//! nobody reading wants cannot fail the read. The check is es-core's; the row whose metadata
//! does not decode is inserted with SQL.

use crate::support::{schema, RawEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_left_out_is_never_decoded() {
    let schema = &schema().await;
    es_core::conformance::a_row_left_out_is_never_decoded(schema.store(), |ticket| async move {
        let corrupt = RawEvent {
            metadata: r#"{"actor": 7}"#,
            ..RawEvent::new(&ticket, 1, "TicketOpened")
        };
        corrupt.insert(schema, schema.pool()).await;
    })
    .await;
}
