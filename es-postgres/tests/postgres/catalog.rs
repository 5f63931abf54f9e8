//! The stream catalog beyond the conformance suite: listings walk the index (the plans say so
//! on a table large enough to matter), and agree with a plain scan in collations where ids
//! that share a prefix do not sort together.

use std::collections::HashSet;

use es_core::{EventStore, ExpectedVersion, Snapshot, SnapshotStore, StreamCatalog, StreamId, StreamQuery};
use es_postgres::PostgresStore;
use sqlx::{PgConnection, Row};

use crate::support::{numbered, schema, store_on_one_connection, Rng, Shared};

/// `(type, id, version)` of each stream listed.
type Listing = Vec<(String, String, u64)>;

async fn list(store: &PostgresStore, query: &StreamQuery) -> Listing {
    let streams = store
        .list_streams(query)
        .await
        .unwrap_or_else(|error| panic!("listing {query:?} failed: {error}"));
    streams
        .into_iter()
        .map(|summary| {
            (
                summary.stream.aggregate_type,
                summary.stream.aggregate_id,
                summary.version,
            )
        })
        .collect()
}

fn query(kind: Option<&str>, prefix: Option<&str>, after: Option<(&str, &str)>, limit: usize) -> StreamQuery {
    StreamQuery {
        aggregate_type: kind.map(str::to_owned),
        id_prefix: prefix.map(str::to_owned),
        after: after.map(|(kind, id)| StreamId::new(kind, id)),
        limit,
    }
}

/// Declares the schema's `aggregate_id` column (and so its unique index) with `collation`.
async fn collate_ids(schema: &Shared, collation: &str) {
    sqlx::query(&format!(
        "ALTER TABLE \"{}\".events ALTER COLUMN aggregate_id TYPE text COLLATE \"{collation}\"",
        schema.schema()
    ))
    .execute(schema.pool())
    .await
    .unwrap_or_else(|error| panic!("collating ids with {collation}: {error}"));
}

async fn has_collation(schema: &Shared, collation: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_collation WHERE collname = $1)")
        .bind(collation)
        .fetch_one(schema.pool())
        .await
        .expect("looking the collation up")
}

/// The plan of the statement `name` prepared on `connection`, with `query`'s parameters, as
/// the plan cache makes it in `mode` (`force_custom_plan` or `force_generic_plan`).
async fn plan(connection: &mut PgConnection, name: &str, query: &StreamQuery, mode: &str) -> String {
    sqlx::query("SELECT set_config('plan_cache_mode', $1, false)")
        .bind(mode)
        .execute(&mut *connection)
        .await
        .expect("plan cache mode");
    let after = query.after.as_ref();
    // The server quotes the values (%L) into EXECUTE's arguments.
    let explain: String = sqlx::query_scalar(
        "SELECT format('EXPLAIN (COSTS OFF) EXECUTE %I(%L, %L, %L, %L, %L)', $1, $2, $3, $4, $5, $6)",
    )
    .bind(name)
    .bind(query.aggregate_type.as_deref())
    .bind(query.id_prefix.as_deref())
    .bind(after.map(|stream| stream.aggregate_type.as_str()))
    .bind(after.map(|stream| stream.aggregate_id.as_str()))
    .bind(query.limit as i64)
    .fetch_one(&mut *connection)
    .await
    .expect("the EXPLAIN statement");
    let rows = sqlx::raw_sql(&explain)
        .fetch_all(&mut *connection)
        .await
        .unwrap_or_else(|error| panic!("{explain}: {error}"));
    let lines: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("QUERY PLAN").expect("a plan line"))
        .collect();
    lines.join("\n")
}

/// The names of the statements prepared on `connection` that walk the stream index.
async fn walks(connection: &mut PgConnection) -> HashSet<String> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pg_prepared_statements WHERE starts_with(statement, 'WITH RECURSIVE')")
            .fetch_all(connection)
            .await
            .expect("prepared statements");
    names.into_iter().collect()
}

/// On 20,000 events in 2,000 streams of 4 types, analysed, every kind of listing plans index
/// seeks on the unique `(aggregate_type, aggregate_id, version)` index and no scan of `events`,
/// in the plan of each call (custom) and in the plan the statement falls back to (generic).
#[tokio::test]
async fn listings_plan_index_seeks_not_a_scan_of_the_events() {
    let schema = schema().await;
    let s = schema.schema();
    sqlx::query(&format!(
        "INSERT INTO \"{s}\".events (position, event_id, aggregate_type, aggregate_id, version, event_name,
                                    schema_version, payload, metadata, recorded_at)
         SELECT (pg_current_xact_id()::text::bigint << 20) | row_number() OVER (), gen_random_uuid(),
                'kind' || (n % 4), 'stream-' || lpad(n::text, 4, '0'), v, 'Numbered', 1, '{{}}', '{{}}',
                clock_timestamp()
         FROM generate_series(1, $1) AS n, generate_series(1, $2) AS v"
    ))
    .bind(2_000)
    .bind(10)
    .execute(schema.pool())
    .await
    .expect("20,000 events");
    sqlx::query(&format!("ANALYZE \"{s}\".events"))
        .execute(schema.pool())
        .await
        .expect("ANALYZE");

    // One connection, so the store prepares its statements where the test can explain them.
    let (store, pool) = store_on_one_connection(s).await;
    let cases = [
        ("first page", query(None, None, None, 50)),
        ("of one type", query(Some("kind1"), None, None, 50)),
        (
            "of one type, next page",
            query(Some("kind1"), None, Some(("kind1", "stream-1001")), 50),
        ),
        (
            "of one type, prefixed",
            query(Some("kind2"), Some("stream-15"), None, 50),
        ),
        (
            "prefixed, after",
            query(None, Some("stream-19"), Some(("kind0", "stream-1000")), 50),
        ),
    ];
    let mut prepared = HashSet::new();
    let mut explained = 0;
    for (label, case) in &cases {
        let listed = list(&store, case).await;
        assert!(!listed.is_empty(), "{label}: nothing listed");
        assert!(listed.iter().all(|(_, _, version)| *version == 10), "{label}: versions");
        let mut connection = pool.acquire().await.expect("the connection");
        let now = walks(&mut connection).await;
        // The statement the call used: the one it prepared, or else either (both are explained).
        let new: Vec<String> = now.difference(&prepared).cloned().collect();
        let names = if new.is_empty() {
            now.iter().cloned().collect()
        } else {
            new
        };
        for name in names {
            for mode in ["force_custom_plan", "force_generic_plan"] {
                let plan = plan(&mut connection, &name, case, mode).await;
                println!("-- {label} ({mode}):\n{plan}\n");
                assert!(
                    !plan.contains("Seq Scan on events") && !plan.contains("Bitmap Heap Scan on events"),
                    "{label} ({mode}) scans the events:\n{plan}"
                );
                assert!(
                    plan.contains("using events_stream_version_key on events"),
                    "{label} ({mode}) does not use the stream index:\n{plan}"
                );
                explained += 1;
            }
        }
        prepared = now;
    }
    assert!(explained >= cases.len() * 2, "every case was explained");
}

/// In Welsh, `ng` is one letter, sorted between `g` and `h`: `ngo` sorts before `n` itself, so
/// the ids that start with `n` are not one range that starts at `n`. They are all listed, in
/// the collation's order, and paged.
#[tokio::test]
async fn a_prefix_is_listed_whole_where_the_collation_splits_it() {
    let schema = schema().await;
    if !has_collation(&schema, "cy-x-icu").await {
        eprintln!("skipped: the server has no ICU collation cy-x-icu");
        return;
    }
    collate_ids(&schema, "cy-x-icu").await;
    let premise: bool = sqlx::query_scalar("SELECT 'ngo' < 'n' COLLATE \"cy-x-icu\"")
        .fetch_one(schema.pool())
        .await
        .expect("comparing");
    assert!(premise, "in Welsh, ngo sorts before n");
    for id in ["na", "ngo", "h1", "nz", "m1", "g1", "o1"] {
        schema
            .append(&StreamId::new("ward", id), ExpectedVersion::NoStream, numbered(1))
            .await
            .expect("append");
    }
    let row = |id: &str| ("ward".to_owned(), id.to_owned(), 1);
    let all = list(&schema, &query(Some("ward"), Some("n"), None, 10)).await;
    assert_eq!(all, [row("ngo"), row("na"), row("nz")]);
    let across_types = list(&schema, &query(None, Some("n"), None, 10)).await;
    assert_eq!(across_types, all);
    let page = list(&schema, &query(Some("ward"), Some("n"), None, 2)).await;
    assert_eq!(page, [row("ngo"), row("na")]);
    let next = list(&schema, &query(Some("ward"), Some("n"), Some(("ward", "na")), 2)).await;
    assert_eq!(next, [row("nz")]);
}

/// What a listing must return, by the plain way: a scan of every event, grouped by stream, in
/// the column's collation.
async fn scanned(schema: &Shared, query: &StreamQuery) -> Listing {
    let after = query.after.as_ref();
    let rows = sqlx::query(&format!(
        "SELECT aggregate_type, aggregate_id, max(version) AS version FROM \"{}\".events
         WHERE ($1::text IS NULL OR aggregate_type = $1)
           AND ($2::text IS NULL OR starts_with(aggregate_id, $2))
           AND ($3::text IS NULL OR (aggregate_type, aggregate_id) > ($3, $4))
         GROUP BY aggregate_type, aggregate_id
         ORDER BY aggregate_type, aggregate_id
         LIMIT $5",
        schema.schema()
    ))
    .bind(query.aggregate_type.as_deref())
    .bind(query.id_prefix.as_deref())
    .bind(after.map(|stream| stream.aggregate_type.as_str()))
    .bind(after.map(|stream| stream.aggregate_id.as_str()))
    .bind(query.limit as i64)
    .fetch_all(schema.pool())
    .await
    .expect("the scan");
    rows.iter()
        .map(|row| {
            let version: i64 = row.get("version");
            (row.get("aggregate_type"), row.get("aggregate_id"), version as u64)
        })
        .collect()
}

/// A random string of 1 to `max` characters from `alphabet`.
fn word(rng: &mut Rng, alphabet: &[char], max: u64) -> String {
    let len = rng.range(1..max + 1);
    (0..len)
        .map(|_| alphabet[rng.range(0..alphabet.len() as u64) as usize])
        .collect()
}

/// Random streams and random queries: the walk lists what a scan lists, in bytewise order
/// (`C`, where it jumps to prefixes), in the database's default collation, and in collations
/// that sort case, accents, punctuation and Welsh letters their own way.
#[tokio::test]
async fn listings_agree_with_a_scan_in_every_collation() {
    // Letters that collations order differently: case, accents, punctuation, Welsh `ng`/`ll`.
    let alphabet: Vec<char> = "angNGlL-_é1".chars().collect();
    for collation in ["C", "default", "und-x-icu", "cy-x-icu", "en_US.utf8"] {
        let schema = schema().await;
        if collation != "default" {
            if !has_collation(&schema, collation).await {
                eprintln!("skipped collation {collation}: the server does not have it");
                continue;
            }
            collate_ids(&schema, collation).await;
        }
        let mut rng = Rng::new(11);
        let kinds = ["Ledger", "ledger", "l-item"];
        let mut streams = Vec::new();
        for _ in 0..150 {
            let stream = StreamId::new(kinds[rng.range(0..3) as usize], word(&mut rng, &alphabet, 4));
            let events = rng.range(1..4) as usize;
            if schema
                .append(&stream, ExpectedVersion::NoStream, numbered(events))
                .await
                .is_ok()
            {
                streams.push(stream);
            }
        }
        for round in 0..150 {
            let kind = (rng.range(0..3) > 0).then(|| kinds[rng.range(0..3) as usize].to_owned());
            let prefix = match rng.range(0..4) {
                0 => None,
                1 => Some(word(&mut rng, &alphabet, 2)),
                _ => {
                    let id = &streams[rng.range(0..streams.len() as u64) as usize].aggregate_id;
                    Some(id.chars().take(rng.range(1..3) as usize).collect())
                }
            };
            let after = match rng.range(0..3) {
                0 => None,
                1 => Some(streams[rng.range(0..streams.len() as u64) as usize].clone()),
                _ => Some(StreamId::new(
                    kinds[rng.range(0..3) as usize],
                    word(&mut rng, &alphabet, 3),
                )),
            };
            let query = StreamQuery {
                aggregate_type: kind,
                id_prefix: prefix,
                after,
                limit: rng.range(1..12) as usize,
            };
            assert_eq!(
                list(&schema, &query).await,
                scanned(&schema, &query).await,
                "collation {collation}, round {round}: {query:?}"
            );
        }
    }
}

/// Snapshots are listed in stream order across types, page by page, each with its state (as
/// JSON: the server keeps it as `jsonb`, so its bytes come back in the server's own spacing).
#[tokio::test]
async fn snapshots_are_listed_page_by_page_across_types() {
    let schema = schema().await;
    let streams = [("order", "o2"), ("invoice", "i1"), ("order", "o1"), ("invoice", "i2")];
    for (at, (kind, id)) in streams.iter().enumerate() {
        let snapshot = Snapshot {
            stream: StreamId::new(*kind, *id),
            version: at as u64 + 1,
            revision: 3,
            schema_version: 1,
            state: serde_json::json!({ "id": id, "lines": [at] }).to_string().into_bytes(),
            taken_at: chrono::Utc::now(),
        };
        schema.save_snapshot(snapshot).await.expect("saving a snapshot");
    }
    let mut listed = Vec::new();
    let mut after: Option<StreamId> = None;
    loop {
        let page = schema
            .list_snapshots(after.as_ref(), 1)
            .await
            .expect("a page of snapshots");
        let Some(last) = page.last() else { break };
        assert_eq!(page.len(), 1, "at most the limit");
        after = Some(last.stream.clone());
        listed.extend(page);
    }
    let ids: Vec<&str> = listed.iter().map(|s| s.stream.aggregate_id.as_str()).collect();
    assert_eq!(ids, ["i1", "i2", "o1", "o2"]);
    for snapshot in &listed {
        let state: serde_json::Value = serde_json::from_slice(&snapshot.state).expect("JSON state");
        assert_eq!(state["id"], snapshot.stream.aggregate_id.as_str());
        assert_eq!(snapshot.revision, 3);
    }
    let all = schema.list_snapshots(None, 10).await.expect("all snapshots");
    assert_eq!(all, listed, "one page or four, the same snapshots");
    assert!(schema.list_snapshots(None, 0).await.expect("no page").is_empty());
}
