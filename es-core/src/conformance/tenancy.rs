//! Checks of tenants: each tenant's store sees its own streams and no other's.

use futures_util::TryStreamExt;
use uuid::Uuid;

use super::global_log::{read_everything, read_until_visible};
use super::{append_ok, fresh_stream, numbered, whole_stream};
use crate::lifecycle::{StreamChange, StreamLifecycle};
use crate::store::{EventStore, ExpectedVersion, LogFilter, Snapshot, SnapshotStore, StreamCatalog, StreamQuery};
use crate::tenancy::{TenantId, TenantStores};
use crate::GlobalLog;

fn fresh_tenant() -> TenantId {
    let id = format!("t{}", &Uuid::now_v7().simple().to_string()[20..]);
    match TenantId::new(id) {
        Ok(tenant) => tenant,
        Err(error) => panic!("{error}"),
    }
}

async fn open<T: TenantStores>(tenants: &T, tenant: &TenantId) -> T::Store {
    match tenants.tenant(tenant).await {
        Ok(store) => store,
        Err(error) => panic!("opening tenant {tenant} failed: {error}"),
    }
}

/// Two tenants appending to the same stream id each see their own events only: stream reads,
/// lookups by id, the global log (whole and filtered), snapshots, the catalog and lifecycle are
/// all per tenant; a tenant opened again finds its data; tenant ids are checked.
pub async fn tenants_are_isolated<T: TenantStores>(tenants: &T) {
    let (a, b) = (fresh_tenant(), fresh_tenant());
    let (store_a, store_b) = (open(tenants, &a).await, open(tenants, &b).await);
    let stream = fresh_stream("tenant");
    append_ok(&store_a, &stream, ExpectedVersion::NoStream, numbered(2)).await;
    append_ok(&store_b, &stream, ExpectedVersion::NoStream, numbered(1)).await;
    let (events_a, events_b) = (
        whole_stream(&store_a, &stream).await,
        whole_stream(&store_b, &stream).await,
    );
    assert_eq!(
        (events_a.len(), events_b.len()),
        (2, 1),
        "the same stream id is two streams"
    );

    for event in &events_b {
        let found = store_a.read_event(event.event_id).await.ok().flatten();
        assert_eq!(found, None, "tenant {a} finds none of tenant {b}'s events by id");
    }
    let ids_a: Vec<Uuid> = events_a.iter().map(|event| event.event_id).collect();
    let log_a = read_until_visible(&store_a, &ids_a).await;
    assert!(
        log_a
            .iter()
            .all(|event| !events_b.iter().any(|other| other.event_id == event.event_id)),
        "tenant {a}'s global log holds none of tenant {b}'s events"
    );
    let page = match store_a.read_filtered(0, 10_000, &LogFilter::default()).await {
        Ok(page) => page,
        Err(error) => panic!("read_filtered failed: {error}"),
    };
    assert_eq!(page.events, log_a, "the filtered read is the tenant's log too");
    assert!(
        read_everything(&store_b)
            .await
            .iter()
            .all(|event| !ids_a.contains(&event.event_id)),
        "tenant {b}'s global log holds none of tenant {a}'s events"
    );

    let snapshot = Snapshot {
        stream: stream.clone(),
        version: 2,
        revision: 0,
        schema_version: 0,
        state: b"{}".to_vec(),
        taken_at: chrono::Utc::now(),
    };
    if let Err(error) = store_a.save_snapshot(snapshot).await {
        panic!("save_snapshot failed: {error}");
    }
    assert_eq!(
        store_b.load_snapshot(&stream).await.ok().flatten(),
        None,
        "snapshots are per tenant"
    );
    let listed = match store_b.list_streams(&StreamQuery::default()).await {
        Ok(listed) => listed,
        Err(error) => panic!("list_streams failed: {error}"),
    };
    let versions: Vec<u64> = listed
        .iter()
        .filter(|summary| summary.stream == stream)
        .map(|s| s.version)
        .collect();
    assert_eq!(versions, vec![1], "the catalog is per tenant");

    if let Err(error) = store_a
        .tombstone(&stream, StreamChange::new("conformance", "tenant a only"))
        .await
    {
        panic!("tombstone failed: {error}");
    }
    append_ok(&store_b, &stream, ExpectedVersion::Exact(1), numbered(1)).await;
    let archived: Vec<_> = match store_b
        .read_archived(&stream, crate::StreamSlice::all())
        .try_collect()
        .await
    {
        Ok(events) => events,
        Err(error) => panic!("read_archived failed: {error}"),
    };
    assert!(archived.is_empty());

    let again = open(tenants, &a).await;
    assert_eq!(
        whole_stream(&again, &stream).await,
        events_a,
        "a tenant opened again finds its data"
    );
    let listed = match tenants.tenants().await {
        Ok(listed) => listed,
        Err(error) => panic!("tenants failed: {error}"),
    };
    assert!(listed.contains(&a) && listed.contains(&b), "{listed:?}");
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "tenants are listed in order");
    for bad in ["", "Acme", "a-b", "a b", "1a", "a__b", "a_", "ä", &"a".repeat(31)] {
        assert!(TenantId::new(bad).is_err(), "{bad:?} is refused");
    }
}
