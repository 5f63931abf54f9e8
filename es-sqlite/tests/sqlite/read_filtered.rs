//! `read_filtered` reads `read_all`'s page, but decodes only the rows the filter wants: a row
//! nobody reading wants cannot fail the read. The check is es-core's; the row whose metadata
//! does not decode is inserted with SQL.

use crate::support::{fresh, plant_bad_metadata};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_left_out_is_never_decoded() {
    let db = &fresh().await;
    es_core::conformance::a_row_left_out_is_never_decoded(&db.store, |ticket| async move {
        plant_bad_metadata(db, &ticket, 1, "TicketOpened");
    })
    .await;
}
