//! Forgettable personal data on PostgreSQL, checked the way an auditor would: by scanning every
//! row of the raw tables with SQL for the plaintext.

use es_core::conformance::{enter_contacts, sealed_contacts, Contact};
use es_core::Repository;

use crate::support::schema;

/// Every row of the schema's events and snapshots, as text.
async fn whole_schema_as_text(store: &es_postgres::PostgresStore) -> String {
    let sql = format!(
        "SELECT coalesce(string_agg(row_to_json(e)::text, ' '), '') FROM \"{0}\".events e
         UNION ALL
         SELECT coalesce(string_agg(row_to_json(s)::text, ' '), '') FROM \"{0}\".snapshots s",
        store.schema()
    );
    let parts: Vec<String> = sqlx::query_scalar(&sql)
        .fetch_all(store.pool())
        .await
        .expect("the tables read");
    parts.join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_of_a_forgotten_subject_is_left_in_any_table() {
    let schema = schema().await;
    // The schema keeps the keys too (migration 8).
    let store = sealed_contacts(schema.store().clone(), schema.store().clone());
    let contacts = Repository::<Contact, _>::new(store.clone()).with_snapshot_every(1);
    enter_contacts(
        &contacts,
        &[("ada", "Ada Lovelace", "555-0101"), ("bob", "Bob Noyce", "555-0202")],
    )
    .await;
    let before = whole_schema_as_text(schema.store()).await;
    assert!(before.contains("fair"), "the scan sees the payloads: {before}");
    for plaintext in ["Ada Lovelace", "555-0101", "Bob Noyce", "555-0202"] {
        assert!(!before.contains(plaintext), "`{plaintext}` is stored in plaintext");
    }

    assert!(store.forget("conformance-contact/ada").await.expect("forgets"));
    let after = whole_schema_as_text(schema.store()).await;
    for plaintext in ["Ada Lovelace", "555-0101"] {
        assert!(!after.contains(plaintext), "`{plaintext}` is left after forgetting");
    }
    assert!(after.contains("es.subject-forgotten"), "the log tells projections");
    let keys = format!(
        "SELECT subject, key IS NULL AS destroyed FROM \"{}\".pii_keys ORDER BY subject",
        schema.store().schema()
    );
    let keys: Vec<(String, bool)> = sqlx::query_as(&keys)
        .fetch_all(schema.store().pool())
        .await
        .expect("the keys read");
    assert_eq!(
        keys,
        [
            ("conformance-contact/ada".to_owned(), true),
            ("conformance-contact/bob".to_owned(), false)
        ],
        "the forgotten subject's key is destroyed, the other kept"
    );

    let ada = contacts
        .load("ada")
        .await
        .expect("a forgotten contact still loads")
        .aggregate;
    assert!(ada.name.is_forgotten() && ada.phone.is_forgotten(), "{ada:?}");
    let bob = contacts.load("bob").await.expect("loads").aggregate;
    assert_eq!(bob.name.known().map(String::as_str), Some("Bob Noyce"));
}
