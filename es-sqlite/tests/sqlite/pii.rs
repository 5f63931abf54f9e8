//! Forgettable personal data in a SQLite file, checked the way an auditor would: by scanning
//! every row of the raw tables with SQL for the plaintext.

use es_core::conformance::{enter_contacts, sealed_contacts, Contact};
use es_core::Repository;

use crate::support::{fresh, raw, TestDb};

/// Every row of the file's events and snapshots, as text.
fn whole_file_as_text(db: &TestDb) -> String {
    let connection = raw(db);
    let mut text = String::new();
    for sql in [
        "SELECT payload || coalesce(metadata, '') FROM events",
        "SELECT state FROM snapshots",
    ] {
        let mut statement = connection.prepare(sql).expect("prepares");
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .expect("reads")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        text.push_str(&rows.join(" "));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_of_a_forgotten_subject_is_left_in_any_table() {
    let db = fresh().await;
    // The file keeps the keys too (migration 5).
    let store = sealed_contacts(db.store.clone(), db.store.clone());
    let contacts = Repository::<Contact, _>::new(store.clone()).with_snapshot_every(1);
    enter_contacts(
        &contacts,
        &[("ada", "Ada Lovelace", "555-0101"), ("bob", "Bob Noyce", "555-0202")],
    )
    .await;
    let before = whole_file_as_text(&db);
    assert!(before.contains("fair"), "the scan sees the payloads: {before}");
    for plaintext in ["Ada Lovelace", "555-0101", "Bob Noyce", "555-0202"] {
        assert!(!before.contains(plaintext), "`{plaintext}` is stored in plaintext");
    }

    assert!(store.forget("conformance-contact/ada").await.expect("forgets"));
    let destroyed: Vec<(String, bool)> = {
        let connection = raw(&db);
        let mut statement = connection
            .prepare("SELECT subject, key IS NULL FROM pii_keys ORDER BY subject")
            .expect("prepares");
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("reads")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        rows
    };
    assert_eq!(
        destroyed,
        [
            ("conformance-contact/ada".to_owned(), true),
            ("conformance-contact/bob".to_owned(), false)
        ]
    );
    let after = whole_file_as_text(&db);
    for plaintext in ["Ada Lovelace", "555-0101"] {
        assert!(!after.contains(plaintext), "`{plaintext}` is left after forgetting");
    }

    let ada = contacts
        .load("ada")
        .await
        .expect("a forgotten contact still loads")
        .aggregate;
    assert!(ada.name.is_forgotten() && ada.phone.is_forgotten(), "{ada:?}");
    let bob = contacts.load("bob").await.expect("loads").aggregate;
    assert_eq!(bob.name.known().map(String::as_str), Some("Bob Noyce"));
}
