//! The read models as PostgreSQL tables, in the event store's schema.

use es_core::{async_trait, HandlerError};
use es_postgres::PostgresStore;
use sqlx::{PgConnection, Row};

use super::{AnalysisModel, AnalysisModelWriter, AnalysisRow, LeadTables, SearchModel, SearchModelWriter};
use crate::lead::LeadStatus;

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

    async fn forget(&mut self, lead_id: &str) -> Result<(), HandlerError> {
        sqlx::query("DELETE FROM lead_search WHERE lead_id = $1")
            .bind(lead_id)
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

    async fn forget_analysis(&mut self, lead_id: &str) -> Result<(), HandlerError> {
        sqlx::query("DELETE FROM lead_analysis WHERE lead_id = $1")
            .bind(lead_id)
            .execute(self)
            .await?;
        Ok(())
    }

    async fn clear_analysis(&mut self) -> Result<(), HandlerError> {
        sqlx::query("DELETE FROM lead_analysis").execute(self).await?;
        Ok(())
    }
}

#[async_trait]
impl LeadTables for PostgresStore {
    type Context = PgConnection;
    type Checkpoints = es_postgres::PostgresCheckpoints;

    fn read_models(&self) -> es_postgres::PostgresCheckpoints {
        self.checkpoints()
    }

    async fn create_tables(&self) -> Result<(), HandlerError> {
        let s = format!("\"{}\"", self.schema());
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
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn load_search(&self) -> Result<SearchModel, HandlerError> {
        let s = format!("\"{}\"", self.schema());
        let rows = sqlx::query(&format!("SELECT lead_id, kind, value FROM {s}.lead_search"))
            .fetch_all(self.pool())
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

    async fn load_analysis(&self) -> Result<AnalysisModel, HandlerError> {
        let s = format!("\"{}\"", self.schema());
        let rows = sqlx::query(&format!("SELECT lead_id, followups, status FROM {s}.lead_analysis"))
            .fetch_all(self.pool())
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

    async fn find(&self, name_or_phone: &str) -> Result<Vec<String>, HandlerError> {
        let s = format!("\"{}\"", self.schema());
        Ok(sqlx::query_scalar(&format!(
            "SELECT DISTINCT lead_id FROM {s}.lead_search WHERE value = $1 ORDER BY lead_id"
        ))
        .bind(name_or_phone)
        .fetch_all(self.pool())
        .await?)
    }
}
