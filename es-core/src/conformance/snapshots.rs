//! Snapshots through the repository: a state stored at an older schema version is upcast on
//! load, and one that cannot be (newer than the code, refused by a step) is replayed instead.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{append_ok, event};
use crate::store::{EventStore, ExpectedVersion, Snapshot, SnapshotStore, StreamId};
use crate::{event, Aggregate, Apply, Repository, UpcastError};

/// The event of the checks' aggregate: the tally grows by `by`.
#[event(name = "tallied")]
#[derive(Debug)]
pub struct Tallied {
    /// How much the tally grows.
    pub by: u64,
}

/// The events of [`Tally`].
#[event]
#[derive(Debug)]
pub enum TallyEvent {
    /// See [`Tallied`].
    Tallied(Tallied),
}

/// An aggregate whose snapshot state changed shape: version 1 stored `{"count": n}`, version 2
/// stores `{"total": n}`.
#[derive(Debug, Default, Serialize, Deserialize, crate::Aggregate)]
#[aggregate(name = "conformance-tally", event = TallyEvent, snapshot_version = 2)]
#[upcast(from = 1, json = tally_v1_to_v2)]
pub struct Tally {
    /// The sum of every `by`.
    pub total: u64,
}

impl Apply<Tallied> for Tally {
    fn apply(&mut self, event: &Tallied) {
        self.total += event.by;
    }
}

fn tally_v1_to_v2(mut state: Value) -> Result<Value, UpcastError> {
    let object = state
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("a tally snapshot is an object"))?;
    let count = object
        .remove("count")
        .ok_or_else(|| UpcastError::missing_field("count"))?;
    object.insert("total".into(), count);
    Ok(state)
}

/// Snapshots are saved at the aggregate's schema version; one at an older version is upcast
/// and used; one newer than the code, or one its step refuses, is ignored and the stream is
/// replayed.
pub async fn older_snapshots_are_upcast<S>(store: &S)
where
    S: EventStore + SnapshotStore + Clone + 'static,
{
    let tallies = Repository::<Tally, S>::new(store.clone()).with_snapshot_every(2);
    let id = uuid::Uuid::now_v7().to_string();
    let stream = StreamId::new(Tally::TYPE, &id);
    let tallied = |by: u64| event("tallied", json!({ "by": by }));
    append_ok(
        store,
        &stream,
        ExpectedVersion::NoStream,
        vec![tallied(1), tallied(2), tallied(4)],
    )
    .await;

    let plant = |schema_version: u32, state: Value| Snapshot {
        stream: stream.clone(),
        version: 2,
        revision: Tally::SNAPSHOT_REVISION,
        schema_version,
        state: state.to_string().into_bytes(),
        taken_at: chrono::Utc::now(),
    };
    let total = || async {
        match tallies.load(&id).await {
            Ok(loaded) => (loaded.version, loaded.aggregate.total),
            Err(error) => panic!("loading {stream} failed: {error}"),
        }
    };
    let save = |snapshot: Snapshot| async move {
        if let Err(error) = store.save_snapshot(snapshot).await {
            panic!("saving a snapshot failed: {error}");
        }
    };

    // A recognisably different state, so its use shows: 100 from the snapshot, 4 replayed.
    save(plant(1, json!({ "count": 100 }))).await;
    let loaded = store
        .load_snapshot(&stream)
        .await
        .ok()
        .flatten()
        .map(|s| s.schema_version);
    assert_eq!(loaded, Some(1), "the store keeps the snapshot's schema version");
    assert_eq!(total().await, (3, 104), "a version-1 snapshot is upcast and used");

    save(plant(3, json!({ "total": 100 }))).await;
    assert_eq!(total().await, (3, 7), "a snapshot newer than the code is replayed over");
    save(plant(1, json!({ "total": 100 }))).await;
    assert_eq!(total().await, (3, 7), "a snapshot its step refuses is replayed over");

    // The repository's own snapshots are written at the current schema version.
    let id = uuid::Uuid::now_v7().to_string();
    for by in [1, 2] {
        let executed = tallies
            .execute(&id, crate::Metadata::new(), move |_: &Tally| {
                Ok::<_, std::convert::Infallible>(vec![Tallied { by }.into()])
            })
            .await;
        assert!(executed.is_ok(), "a command failed: {executed:?}");
    }
    let taken = store
        .load_snapshot(&StreamId::new(Tally::TYPE, &id))
        .await
        .ok()
        .flatten();
    let taken = taken.map(|snapshot| (snapshot.version, snapshot.schema_version));
    assert_eq!(taken, Some((2, Tally::SNAPSHOT_VERSION)));
}
