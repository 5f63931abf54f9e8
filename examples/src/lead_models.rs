//! The Lead read models from the book, maintained by projections:
//!
//! - the **search model**: every name and phone number a lead ever had, so a lead is found by an
//!   old name too;
//! - the **analysis model**: per lead, how many follow-ups were set and the current status.
//!
//! Each projection is written once, against a small writer trait, and runs on two read-model
//! backends: in memory ([`SearchModel`], [`AnalysisModel`] in an
//! [`InMemoryReadModel`](es_core::InMemoryReadModel)) and PostgreSQL tables (the writer traits
//! are implemented for `sqlx::PgConnection`, inside the transaction that also commits the
//! checkpoint).

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

use es_core::{async_trait, event, DecodedEvent, HandlerError, Projection};

use crate::lead::{
    ContactDetailsUpdated, FollowupSet, LeadClosed, LeadInitialized, LeadStatus, OrderSubmitted, PaymentConfirmed,
    PaymentFailed,
};

/// Writes to a search model.
#[async_trait]
pub trait SearchModelWriter: Send {
    /// Remembers that lead `lead_id` was known as `name` with phone `phone`.
    async fn remember(&mut self, lead_id: &str, name: &str, phone: &str) -> Result<(), HandlerError>;
    /// Forgets everything, before a rebuild.
    async fn clear_search(&mut self) -> Result<(), HandlerError>;
}

/// Writes to an analysis model.
#[async_trait]
pub trait AnalysisModelWriter: Send {
    /// Sets the lead's status and adds `new_followups` to its follow-up count (creating the row).
    async fn record(&mut self, lead_id: &str, status: LeadStatus, new_followups: u32) -> Result<(), HandlerError>;
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
    const AGGREGATE_TYPES: &'static [&'static str] = &["lead"];
    type Event = LeadSearchEvent;
    type Context = W;

    async fn handle(&self, model: &mut W, event: &DecodedEvent<LeadSearchEvent>) -> Result<(), HandlerError> {
        let lead_id = &event.envelope.stream.aggregate_id;
        let (name, phone) = match &event.event {
            LeadSearchEvent::Initialized(e) => (&e.name, &e.phone),
            LeadSearchEvent::DetailsUpdated(e) => (&e.name, &e.phone),
        };
        model.remember(lead_id, name, phone).await
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
    const AGGREGATE_TYPES: &'static [&'static str] = &["lead"];
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

    async fn clear_analysis(&mut self) -> Result<(), HandlerError> {
        self.leads.clear();
        Ok(())
    }
}

/// The same read models as PostgreSQL tables, in the event store's schema.
pub mod postgres {
    use es_core::{async_trait, HandlerError};
    use es_postgres::PostgresStore;
    use sqlx::{PgConnection, Row};

    use super::{AnalysisModel, AnalysisModelWriter, AnalysisRow, SearchModel, SearchModelWriter};
    use crate::lead::LeadStatus;

    /// Creates the read-model tables in `store`'s schema, if missing. Run after
    /// [`PostgresStore::migrate`].
    pub async fn create_tables(store: &PostgresStore) -> Result<(), sqlx::Error> {
        let s = format!("\"{}\"", store.schema());
        sqlx::raw_sql(&format!(
            "CREATE TABLE IF NOT EXISTS {s}.lead_search (
                 lead_id text NOT NULL,
                 kind    text NOT NULL CHECK (kind IN ('name', 'phone')),
                 value   text NOT NULL,
                 PRIMARY KEY (lead_id, kind, value)
             );
             CREATE INDEX IF NOT EXISTS lead_search_by_value ON {s}.lead_search (value);
             CREATE TABLE IF NOT EXISTS {s}.lead_analysis (
                 lead_id   text    PRIMARY KEY,
                 followups integer NOT NULL,
                 status    text    NOT NULL
             );"
        ))
        .execute(store.pool())
        .await
        .map(|_| ())
    }

    // Handlers run inside the checkpoint's transaction with `search_path` set to the store's
    // schema, so the tables are named without one.
    #[async_trait]
    impl SearchModelWriter for PgConnection {
        async fn remember(&mut self, lead_id: &str, name: &str, phone: &str) -> Result<(), HandlerError> {
            sqlx::query(
                "INSERT INTO lead_search (lead_id, kind, value) VALUES ($1, 'name', $2), ($1, 'phone', $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(lead_id)
            .bind(name)
            .bind(phone)
            .execute(self)
            .await?;
            Ok(())
        }

        async fn clear_search(&mut self) -> Result<(), HandlerError> {
            sqlx::query("DELETE FROM lead_search").execute(self).await?;
            Ok(())
        }
    }

    #[async_trait]
    impl AnalysisModelWriter for PgConnection {
        async fn record(&mut self, lead_id: &str, status: LeadStatus, new_followups: u32) -> Result<(), HandlerError> {
            sqlx::query(
                "INSERT INTO lead_analysis (lead_id, followups, status) VALUES ($1, $2, $3)
                 ON CONFLICT (lead_id) DO UPDATE
                 SET followups = lead_analysis.followups + excluded.followups, status = excluded.status",
            )
            .bind(lead_id)
            .bind(i32::try_from(new_followups)?)
            .bind(status.as_str())
            .execute(self)
            .await?;
            Ok(())
        }

        async fn clear_analysis(&mut self) -> Result<(), HandlerError> {
            sqlx::query("DELETE FROM lead_analysis").execute(self).await?;
            Ok(())
        }
    }

    /// The ids of leads that ever had this name or phone.
    pub async fn find(store: &PostgresStore, name_or_phone: &str) -> Result<Vec<String>, sqlx::Error> {
        let s = format!("\"{}\"", store.schema());
        sqlx::query_scalar(&format!(
            "SELECT DISTINCT lead_id FROM {s}.lead_search WHERE value = $1 ORDER BY lead_id"
        ))
        .bind(name_or_phone)
        .fetch_all(store.pool())
        .await
    }

    /// The whole search table, as the in-memory model (for comparisons and display).
    pub async fn load_search(store: &PostgresStore) -> Result<SearchModel, sqlx::Error> {
        let s = format!("\"{}\"", store.schema());
        let rows = sqlx::query(&format!("SELECT lead_id, kind, value FROM {s}.lead_search"))
            .fetch_all(store.pool())
            .await?;
        let mut model = SearchModel::default();
        for row in rows {
            let entry = model.leads.entry(row.try_get("lead_id")?).or_default();
            let kind: String = row.try_get("kind")?;
            let value: String = row.try_get("value")?;
            if kind == "name" {
                entry.names.insert(value);
            } else {
                entry.phones.insert(value);
            }
        }
        Ok(model)
    }

    /// The whole analysis table, as the in-memory model.
    pub async fn load_analysis(store: &PostgresStore) -> Result<AnalysisModel, sqlx::Error> {
        let s = format!("\"{}\"", store.schema());
        let rows = sqlx::query(&format!("SELECT lead_id, followups, status FROM {s}.lead_analysis"))
            .fetch_all(store.pool())
            .await?;
        let mut model = AnalysisModel::default();
        for row in rows {
            let status: String = row.try_get("status")?;
            let status = LeadStatus::from_str_name(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown lead status {status:?}").into()))?;
            let followups: i32 = row.try_get("followups")?;
            let followups = u32::try_from(followups).map_err(|error| sqlx::Error::Decode(error.into()))?;
            model
                .leads
                .insert(row.try_get("lead_id")?, AnalysisRow { followups, status });
        }
        Ok(model)
    }
}
