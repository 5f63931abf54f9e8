//! Load–change–save: an aggregate loaded for a change records its new events, and saving
//! appends them expecting the version it was loaded at.

use std::ops::Deref;

use uuid::Uuid;

use super::command::{command_metadata, AppendedEvent, Decision};
use super::{AsOf, IdRef, Repository, RepositoryError, Versioned};
use crate::aggregate::Aggregate;
use crate::metadata::Metadata;
use crate::record::{command_event_id, encode_batch};
use crate::store::{EventStore, ExpectedVersion, StoreError, StreamId};

/// An aggregate loaded for a change (by [`Repository::load_for_update`]): its state, the
/// version it was loaded at, and the events recorded since, which [`Repository::save`] appends.
///
/// It dereferences to the state, which already reflects the recorded events.
#[derive(Debug, Clone)]
pub struct Loaded<A: Aggregate> {
    stream: StreamId,
    state: A,
    loaded_version: u64,
    pending: Vec<A::Event>,
    /// The command id of a save that failed, kept so that saving again reuses the events' ids.
    command_id: Option<Uuid>,
}

impl<A: Aggregate> Loaded<A> {
    /// The state, with the recorded events applied.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// The version the aggregate was loaded (or last saved) at: what saving expects the stream
    /// to be at.
    pub fn loaded_version(&self) -> u64 {
        self.loaded_version
    }

    /// The version the state reflects: the loaded version plus the recorded events.
    pub fn version(&self) -> u64 {
        self.loaded_version + self.pending.len() as u64
    }

    /// The events recorded and not saved yet, oldest first.
    pub fn pending(&self) -> &[A::Event] {
        &self.pending
    }

    /// Records `event`: applies it to the state and keeps it for [`Repository::save`].
    pub fn record(&mut self, event: impl Into<A::Event>) {
        let event = event.into();
        self.state.apply_event(&event);
        self.pending.push(event);
    }

    /// Runs a decision on the state (a command method such as `Order::add_item`) and records the
    /// events it returns; a refusal records nothing and is returned.
    pub fn decide<D: Decision<A::Event>>(&mut self, decide: impl FnOnce(&A) -> D) -> Result<&mut Self, D::Error> {
        for event in decide(&self.state).into_events()? {
            self.record(event);
        }
        Ok(self)
    }

    /// The stream this aggregate's events go to.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }
}

impl<A: Aggregate> Deref for Loaded<A> {
    type Target = A;

    fn deref(&self) -> &A {
        &self.state
    }
}

/// What [`Repository::save`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Saved {
    /// The stream's version after the save.
    pub version: u64,
    /// The saved events, where they were stored, in order (empty when nothing was pending).
    pub appended: Vec<AppendedEvent>,
    /// The command id the events carry.
    pub command_id: Uuid,
    /// Whether the events had already been saved by an earlier call with the same command id
    /// whose answer was lost: nothing was written this time.
    pub already_stored: bool,
}

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    S: EventStore,
{
    /// Loads the current state of aggregate `id` for a change: record events on it (with
    /// [`Loaded::record`] or [`Loaded::decide`]), then [`Repository::save`] it.
    ///
    /// This is the classic load–change–save flow. Two copies loaded at the same time cannot
    /// both be saved: the second save finds the stream moved on and fails with
    /// [`RepositoryError::Conflict`], writing nothing.
    ///
    /// ```
    /// # use es_core::{event, Aggregate, Apply, InMemoryStore, Metadata, Repository, RepositoryError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[event] #[derive(Debug, Clone, PartialEq)] pub struct OrderPlaced;
    /// # #[event] #[derive(Debug, Clone, PartialEq)] pub struct ItemAdded { pub item: String }
    /// # #[event] #[derive(Debug, Clone, PartialEq)] pub enum OrderEvent { Placed(OrderPlaced), ItemAdded(ItemAdded) }
    /// # #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
    /// # #[aggregate(name = "order", event = OrderEvent)]
    /// # pub struct Order { placed: bool, items: Vec<String> }
    /// # impl Apply<OrderPlaced> for Order { fn apply(&mut self, _: &OrderPlaced) { self.placed = true } }
    /// # impl Apply<ItemAdded> for Order { fn apply(&mut self, e: &ItemAdded) { self.items.push(e.item.clone()) } }
    /// impl Order {
    ///     fn add_item(&self, item: &str) -> Result<Vec<OrderEvent>, String> {
    ///         if self.items.iter().any(|existing| existing == item) {
    ///             return Err(format!("{item} is already in the order"));
    ///         }
    ///         Ok(vec![ItemAdded { item: item.into() }.into()])
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let orders = Repository::<Order, _>::new(InMemoryStore::new());
    /// let mut order = orders.load_for_update("O-1").await?;
    /// order.record(OrderPlaced);
    /// order.decide(|order| order.add_item("product-A"))?;
    /// orders.save(&mut order, Metadata::new()).await?;
    ///
    /// // Two copies of the same order, loaded at the same time:
    /// let mut first = orders.load_for_update("O-1").await?;
    /// let mut second = orders.load_for_update("O-1").await?;
    /// first.decide(|order| order.add_item("product-C"))?;
    /// orders.save(&mut first, Metadata::new()).await?;
    /// second.decide(|order| order.add_item("product-D"))?;
    /// let refused = orders.save(&mut second, Metadata::new()).await;
    /// assert!(matches!(refused, Err(RepositoryError::Conflict(conflict)) if conflict.actual == 3));
    /// assert_eq!(orders.load("O-1").await?.aggregate.items, ["product-A", "product-C"]);
    /// # Ok(()) }
    /// ```
    pub async fn load_for_update<Q: IdRef<A::Id> + ?Sized>(&self, id: &Q) -> Result<Loaded<A>, RepositoryError> {
        let stream = Self::stream_id(id);
        let Versioned { aggregate, version } = self.load_open(&stream, AsOf::Latest).await?;
        Ok(Loaded {
            stream,
            state: aggregate,
            loaded_version: version,
            pending: Vec::new(),
            command_id: None,
        })
    }

    /// Appends the events recorded on `aggregate`, expecting the stream to be at the version
    /// it was loaded at, each with `metadata` (completed as [`Repository::execute`] does). On
    /// success the events are no longer pending and the aggregate counts as loaded at the new
    /// version, so it can be changed and saved again.
    ///
    /// Fails with [`RepositoryError::Conflict`] when another writer saved first; nothing is
    /// written and the recorded events stay pending (load again and redo the change). Saves are
    /// idempotent: a save that failed with an outage may be called again as it is, and a
    /// request sent again with the same [`Metadata::with_command_id`] is answered with
    /// [`Saved::already_stored`] instead of being appended twice. Such a `Saved` describes the
    /// original save (its events and the version after them), and `aggregate` takes the state
    /// right after those events, whatever was appended since.
    pub async fn save(&self, aggregate: &mut Loaded<A>, metadata: Metadata) -> Result<Saved, RepositoryError> {
        let metadata = match aggregate.command_id {
            Some(kept) if metadata.command_id.is_none() => metadata.with_command_id(kept),
            _ => metadata,
        };
        let (metadata, command_id) = command_metadata(metadata);
        if aggregate.pending.is_empty() {
            return Ok(Saved {
                version: aggregate.loaded_version,
                appended: Vec::new(),
                command_id,
                already_stored: false,
            });
        }
        aggregate.command_id = Some(command_id);
        let stream = aggregate.stream.clone();
        let batch = encode_batch(&stream, &aggregate.pending, &metadata)?;
        let ids: Vec<Uuid> = batch.iter().map(|event| event.event_id).collect();
        let expected = ExpectedVersion::Exact(aggregate.loaded_version);
        let outcome = match self.store.append(&stream, expected, batch).await {
            Ok(outcome) if !outcome.already_stored => outcome,
            Ok(_) | Err(StoreError::DuplicateEventId { .. }) => return self.saved_before(aggregate, command_id).await,
            Err(error) => return Err(error.into()),
        };
        self.after_append(&stream, &aggregate.state, outcome.previous_version, outcome.new_version)
            .await;
        let appended = AppendedEvent::of(&ids, &outcome);
        aggregate.loaded_version = outcome.new_version;
        aggregate.pending.clear();
        aggregate.command_id = None;
        Ok(Saved {
            version: outcome.new_version,
            appended,
            command_id,
            already_stored: false,
        })
    }

    /// A save whose events an earlier call stored: the aggregate takes the stored state.
    async fn saved_before(&self, aggregate: &mut Loaded<A>, command_id: Uuid) -> Result<Saved, RepositoryError> {
        let stream = aggregate.stream.clone();
        let Some(stored) = self.stored_command(&stream, command_id, 1).await? else {
            return Err(StoreError::DuplicateEventId {
                event_id: command_event_id(command_id, &stream, 0),
                stream,
            }
            .into());
        };
        aggregate.state = stored.aggregate;
        aggregate.loaded_version = stored.version;
        aggregate.pending.clear();
        aggregate.command_id = None;
        Ok(Saved {
            version: stored.version,
            appended: stored.appended,
            command_id,
            already_stored: true,
        })
    }
}
