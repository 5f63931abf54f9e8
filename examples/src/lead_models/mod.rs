//! The Lead read models from the book, maintained by projections:
//!
//! - the **search model**: every name and phone number a lead ever had, so a lead is found by an
//!   old name too;
//! - the **analysis model**: per lead, how many follow-ups were set and the current status.
//!
//! Each projection is written once, against a small writer trait, and runs on three read-model
//! backends: in memory ([`SearchModel`], [`AnalysisModel`] in an
//! [`InMemoryReadModel`](es_core::InMemoryReadModel)), and tables in the event store's own
//! database: PostgreSQL (the writer traits implemented for `sqlx::PgConnection`) and SQLite (for
//! [`es_sqlite::SqliteContext`]), inside the transaction that also commits the checkpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

use es_core::lifecycle::{StreamClosed, StreamStatus, STREAM_LIFECYCLE};
use es_core::pii::{KeyStore, PiiStore, SubjectForgotten, FORGOTTEN_SUBJECTS};
use es_core::{
    async_trait, event, Aggregate, CheckpointStore, DecodedEvent, EventDescriptor, EventSet, EventStore, GlobalLog,
    HandlerError, Projection, ProjectionRunner, SnapshotStore,
};

use crate::lead::{
    ContactDetailsUpdated, FollowupSet, Lead, LeadClosed, LeadEvent, LeadInitialized, LeadStatus, OrderSubmitted,
    PaymentConfirmed, PaymentFailed,
};

/// Writes to a search model.
#[async_trait]
pub trait SearchModelWriter: Send {
    /// Remembers that lead `lead_id` was known as `name` with phone `phone`.
    async fn remember(&mut self, lead_id: &str, name: &str, phone: &str) -> Result<(), HandlerError>;
    /// Drops everything it knows of lead `lead_id`: the lead was forgotten.
    async fn forget(&mut self, lead_id: &str) -> Result<(), HandlerError>;
    /// Forgets everything, before a rebuild.
    async fn clear_search(&mut self) -> Result<(), HandlerError>;
}

/// Writes to an analysis model.
#[async_trait]
pub trait AnalysisModelWriter: Send {
    /// Sets the lead's status and adds `new_followups` to its follow-up count (creating the row).
    async fn record(&mut self, lead_id: &str, status: LeadStatus, new_followups: u32) -> Result<(), HandlerError>;
    /// Removes a lead's row (its stream was deleted).
    async fn forget_analysis(&mut self, lead_id: &str) -> Result<(), HandlerError>;
    /// Forgets everything, before a rebuild.
    async fn clear_analysis(&mut self) -> Result<(), HandlerError>;
}

/// The events the search projection reads.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum LeadSearchEvent {
    /// A new lead's first name and phone.
    Initialized(LeadInitialized),
    /// Later names and phones.
    DetailsUpdated(ContactDetailsUpdated),
    /// A lead (or anyone else) was forgotten: its rows go.
    Forgotten(SubjectForgotten),
    /// A stream was closed: a deleted lead's rows go.
    StreamClosed(StreamClosed),
}

/// The events the analysis projection reads (contacts and detail changes are skipped unread).
#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum LeadAnalysisEvent {
    /// Creates the row.
    Initialized(LeadInitialized),
    /// Counts a follow-up.
    FollowupSet(FollowupSet),
    /// Pending payment.
    OrderSubmitted(OrderSubmitted),
    /// Converted.
    PaymentConfirmed(PaymentConfirmed),
    /// Payment failed.
    PaymentFailed(PaymentFailed),
    /// Closed.
    Closed(LeadClosed),
    /// A stream was closed: a deleted lead's row goes.
    StreamClosed(StreamClosed),
}

/// The lead whose stream `closed` deleted, if it is one: its rows go from the read models, as
/// its events went from the store (a rebuild no longer sees them either).
fn deleted_lead(closed: &StreamClosed) -> Option<&str> {
    (closed.status == StreamStatus::Deleted && closed.aggregate_type == Lead::TYPE)
        .then_some(closed.aggregate_id.as_str())
}

/// Maintains the search model in any [`SearchModelWriter`].
#[derive(Debug)]
pub struct LeadSearchProjection<W>(PhantomData<fn() -> W>);

impl<W> Default for LeadSearchProjection<W> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

#[async_trait]
impl<W: SearchModelWriter + 'static> Projection for LeadSearchProjection<W> {
    const NAME: &'static str = "lead-search";
    const AGGREGATE_TYPES: &'static [&'static str] = &["lead", FORGOTTEN_SUBJECTS, STREAM_LIFECYCLE];
    const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[LeadEvent::EVENTS];
    type Event = LeadSearchEvent;
    type Context = W;

    async fn handle(&self, model: &mut W, event: &DecodedEvent<LeadSearchEvent>) -> Result<(), HandlerError> {
        let lead_id = &event.envelope.stream.aggregate_id;
        let (name, phone) = match &event.event {
            LeadSearchEvent::Initialized(e) => (&e.name, &e.phone),
            LeadSearchEvent::DetailsUpdated(e) => (&e.name, &e.phone),
            LeadSearchEvent::Forgotten(forgotten) => {
                return match forgotten.subject.strip_prefix("lead/") {
                    Some(lead_id) => model.forget(lead_id).await,
                    None => Ok(()),
                };
            }
            LeadSearchEvent::StreamClosed(closed) => {
                return match deleted_lead(closed) {
                    Some(lead_id) => model.forget(lead_id).await,
                    None => Ok(()),
                };
            }
        };
        // A rebuild after a lead was forgotten reads its details as forgotten: nothing to keep.
        match (name.known(), phone.known()) {
            (Some(name), Some(phone)) => model.remember(lead_id, name, phone).await,
            _ => Ok(()),
        }
    }

    async fn reset(&self, model: &mut W) -> Result<(), HandlerError> {
        model.clear_search().await
    }
}

/// Maintains the analysis model in any [`AnalysisModelWriter`].
#[derive(Debug)]
pub struct LeadAnalysisProjection<W>(PhantomData<fn() -> W>);

impl<W> Default for LeadAnalysisProjection<W> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

#[async_trait]
impl<W: AnalysisModelWriter + 'static> Projection for LeadAnalysisProjection<W> {
    const NAME: &'static str = "lead-analysis";
    const AGGREGATE_TYPES: &'static [&'static str] = &["lead", STREAM_LIFECYCLE];
    const SOURCE_EVENTS: &'static [&'static [EventDescriptor]] = &[LeadEvent::EVENTS];
    type Event = LeadAnalysisEvent;
    type Context = W;

    async fn handle(&self, model: &mut W, event: &DecodedEvent<LeadAnalysisEvent>) -> Result<(), HandlerError> {
        let lead_id = &event.envelope.stream.aggregate_id;
        let (status, new_followups) = match &event.event {
            LeadAnalysisEvent::Initialized(_) => (LeadStatus::NewLead, 0),
            LeadAnalysisEvent::FollowupSet(_) => (LeadStatus::FollowupSet, 1),
            LeadAnalysisEvent::OrderSubmitted(_) => (LeadStatus::PendingPayment, 0),
            LeadAnalysisEvent::PaymentConfirmed(_) => (LeadStatus::Converted, 0),
            LeadAnalysisEvent::PaymentFailed(_) => (LeadStatus::PaymentFailed, 0),
            LeadAnalysisEvent::Closed(_) => (LeadStatus::Closed, 0),
            LeadAnalysisEvent::StreamClosed(closed) => {
                return match deleted_lead(closed) {
                    Some(lead_id) => model.forget_analysis(lead_id).await,
                    None => Ok(()),
                };
            }
        };
        model.record(lead_id, status, new_followups).await
    }

    async fn reset(&self, model: &mut W) -> Result<(), HandlerError> {
        model.clear_analysis().await
    }
}

/// Every name and phone of every lead, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchModel {
    /// Per lead id: all names and all phones it ever had.
    pub leads: BTreeMap<String, SearchEntry>,
}

/// What the search model knows of one lead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchEntry {
    /// Every name the lead had.
    pub names: BTreeSet<String>,
    /// Every phone the lead had.
    pub phones: BTreeSet<String>,
}

impl SearchModel {
    /// The ids of leads that ever had this name or phone, in order.
    pub fn find(&self, name_or_phone: &str) -> Vec<String> {
        self.leads
            .iter()
            .filter(|(_, entry)| entry.names.contains(name_or_phone) || entry.phones.contains(name_or_phone))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[async_trait]
impl SearchModelWriter for SearchModel {
    async fn remember(&mut self, lead_id: &str, name: &str, phone: &str) -> Result<(), HandlerError> {
        let entry = self.leads.entry(lead_id.to_owned()).or_default();
        entry.names.insert(name.to_owned());
        entry.phones.insert(phone.to_owned());
        Ok(())
    }

    async fn forget(&mut self, lead_id: &str) -> Result<(), HandlerError> {
        self.leads.remove(lead_id);
        Ok(())
    }

    async fn clear_search(&mut self) -> Result<(), HandlerError> {
        self.leads.clear();
        Ok(())
    }
}

/// Follow-ups and status per lead, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnalysisModel {
    /// Per lead id.
    pub leads: BTreeMap<String, AnalysisRow>,
}

/// The analysis model's row for one lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalysisRow {
    /// How many follow-ups were set.
    pub followups: u32,
    /// The lead's current status.
    pub status: LeadStatus,
}

#[async_trait]
impl AnalysisModelWriter for AnalysisModel {
    async fn record(&mut self, lead_id: &str, status: LeadStatus, new_followups: u32) -> Result<(), HandlerError> {
        let row = self
            .leads
            .entry(lead_id.to_owned())
            .or_insert(AnalysisRow { followups: 0, status });
        row.followups += new_followups;
        row.status = status;
        Ok(())
    }

    async fn forget_analysis(&mut self, lead_id: &str) -> Result<(), HandlerError> {
        self.leads.remove(lead_id);
        Ok(())
    }

    async fn clear_analysis(&mut self) -> Result<(), HandlerError> {
        self.leads.clear();
        Ok(())
    }
}

pub mod postgres;
pub mod sqlite;

/// An event store whose database also holds the Lead read-model tables: what the Lead demo needs
/// of PostgreSQL and SQLite alike.
#[async_trait]
pub trait LeadTables: EventStore + GlobalLog + SnapshotStore + Clone + 'static {
    /// What the projections' handlers write to.
    type Context: SearchModelWriter + AnalysisModelWriter + 'static;
    /// The checkpoints, kept in the same database as the tables.
    type Checkpoints: CheckpointStore<Context = Self::Context>;

    /// The checkpoint store for projections into these tables.
    fn read_models(&self) -> Self::Checkpoints;
    /// Creates the tables, if missing.
    async fn create_tables(&self) -> Result<(), HandlerError>;
    /// The search table, as the in-memory model.
    async fn load_search(&self) -> Result<SearchModel, HandlerError>;
    /// The analysis table, as the in-memory model.
    async fn load_analysis(&self) -> Result<AnalysisModel, HandlerError>;
    /// The ids of leads that ever had this name or phone.
    async fn find(&self, name_or_phone: &str) -> Result<Vec<String>, HandlerError>;
}

/// The same tables behind a store that seals the leads' personal data, the store keeping the
/// keys too ([`forgettable_leads`](crate::lead::forgettable_leads)).
#[async_trait]
impl<S: LeadTables + KeyStore> LeadTables for PiiStore<S, S> {
    type Context = S::Context;
    type Checkpoints = S::Checkpoints;

    fn read_models(&self) -> S::Checkpoints {
        self.inner().read_models()
    }

    async fn create_tables(&self) -> Result<(), HandlerError> {
        self.inner().create_tables().await
    }

    async fn load_search(&self) -> Result<SearchModel, HandlerError> {
        self.inner().load_search().await
    }

    async fn load_analysis(&self) -> Result<AnalysisModel, HandlerError> {
        self.inner().load_analysis().await
    }

    async fn find(&self, name_or_phone: &str) -> Result<Vec<String>, HandlerError> {
        self.inner().find(name_or_phone).await
    }
}

/// The runner of the search projection into `store`'s tables.
pub type SearchRunner<S> =
    ProjectionRunner<LeadSearchProjection<<S as LeadTables>::Context>, S, <S as LeadTables>::Checkpoints>;
/// The runner of the analysis projection into `store`'s tables.
pub type AnalysisRunner<S> =
    ProjectionRunner<LeadAnalysisProjection<<S as LeadTables>::Context>, S, <S as LeadTables>::Checkpoints>;

/// The runners of both Lead projections, reading `store` and writing its tables.
pub fn lead_runners<S: LeadTables>(store: &S) -> (SearchRunner<S>, AnalysisRunner<S>) {
    let search = ProjectionRunner::new(LeadSearchProjection::default(), store.clone(), store.read_models());
    let analysis = ProjectionRunner::new(LeadAnalysisProjection::default(), store.clone(), store.read_models());
    (search, analysis)
}
