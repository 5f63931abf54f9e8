//! The read models as tables in the SQLite file that holds the events.
//!
//! Handlers get the unit's [`SqliteContext`]: a connection inside the write transaction that
//! also commits the checkpoint. Its calls are synchronous and quick (a local file).

use es_core::{async_trait, HandlerError};
use es_sqlite::rusqlite::{params, Connection};
use es_sqlite::{SqliteContext, SqliteStore};

use super::{AnalysisModel, AnalysisModelWriter, AnalysisRow, LeadTables, SearchModel, SearchModelWriter};
use crate::lead::LeadStatus;

#[async_trait]
impl SearchModelWriter for SqliteContext {
    async fn remember(&mut self, lead_id: &str, name: &str, phone: &str) -> Result<(), HandlerError> {
        self.prepare_cached(
            "INSERT OR IGNORE INTO lead_search (lead_id, kind, value) VALUES (?1, 'name', ?2), (?1, 'phone', ?3)",
        )?
        .execute(params![lead_id, name, phone])?;
        Ok(())
    }

    async fn forget(&mut self, lead_id: &str) -> Result<(), HandlerError> {
        self.prepare_cached("DELETE FROM lead_search WHERE lead_id = ?1")?
            .execute(params![lead_id])?;
        Ok(())
    }

    async fn clear_search(&mut self) -> Result<(), HandlerError> {
        self.execute("DELETE FROM lead_search", [])?;
        Ok(())
    }
}

#[async_trait]
impl AnalysisModelWriter for SqliteContext {
    async fn record(&mut self, lead_id: &str, status: LeadStatus, new_followups: u32) -> Result<(), HandlerError> {
        self.prepare_cached(
            "INSERT INTO lead_analysis (lead_id, followups, status) VALUES (?1, ?2, ?3)
             ON CONFLICT (lead_id) DO UPDATE
             SET followups = lead_analysis.followups + excluded.followups, status = excluded.status",
        )?
        .execute(params![lead_id, new_followups, status.as_str()])?;
        Ok(())
    }

    async fn forget_analysis(&mut self, lead_id: &str) -> Result<(), HandlerError> {
        self.prepare_cached("DELETE FROM lead_analysis WHERE lead_id = ?1")?
            .execute(params![lead_id])?;
        Ok(())
    }

    async fn clear_analysis(&mut self) -> Result<(), HandlerError> {
        self.execute("DELETE FROM lead_analysis", [])?;
        Ok(())
    }
}

fn search_model(db: &Connection) -> es_sqlite::rusqlite::Result<SearchModel> {
    let mut rows = db.prepare("SELECT lead_id, kind, value FROM lead_search")?;
    let mut rows = rows.query([])?;
    let mut model = SearchModel::default();
    while let Some(row) = rows.next()? {
        let entry = model.leads.entry(row.get("lead_id")?).or_default();
        let kind: String = row.get("kind")?;
        let value: String = row.get("value")?;
        if kind == "name" {
            entry.names.insert(value);
        } else {
            entry.phones.insert(value);
        }
    }
    Ok(model)
}

fn analysis_model(db: &Connection) -> es_sqlite::rusqlite::Result<AnalysisModel> {
    let mut rows = db.prepare("SELECT lead_id, followups, status FROM lead_analysis")?;
    let mut rows = rows.query([])?;
    let mut model = AnalysisModel::default();
    while let Some(row) = rows.next()? {
        let status: String = row.get("status")?;
        let status = LeadStatus::from_str_name(&status).ok_or_else(|| {
            es_sqlite::rusqlite::Error::FromSqlConversionFailure(
                2,
                es_sqlite::rusqlite::types::Type::Text,
                format!("unknown lead status {status:?}").into(),
            )
        })?;
        model.leads.insert(
            row.get("lead_id")?,
            AnalysisRow {
                followups: row.get("followups")?,
                status,
            },
        );
    }
    Ok(model)
}

#[async_trait]
impl LeadTables for SqliteStore {
    type Context = SqliteContext;
    type Checkpoints = es_sqlite::SqliteCheckpoints;

    fn read_models(&self) -> es_sqlite::SqliteCheckpoints {
        self.checkpoints()
    }

    async fn create_tables(&self) -> Result<(), HandlerError> {
        Ok(self
            .write(|db| {
                db.execute_batch(
                    "CREATE TABLE IF NOT EXISTS lead_search (
                         lead_id TEXT NOT NULL,
                         kind    TEXT NOT NULL CHECK (kind IN ('name', 'phone')),
                         value   TEXT NOT NULL,
                         PRIMARY KEY (lead_id, kind, value)
                     );
                     CREATE INDEX IF NOT EXISTS lead_search_by_value ON lead_search (value);
                     CREATE TABLE IF NOT EXISTS lead_analysis (
                         lead_id   TEXT    PRIMARY KEY,
                         followups INTEGER NOT NULL,
                         status    TEXT    NOT NULL
                     );",
                )
            })
            .await?)
    }

    async fn load_search(&self) -> Result<SearchModel, HandlerError> {
        Ok(self.read(search_model).await?)
    }

    async fn load_analysis(&self) -> Result<AnalysisModel, HandlerError> {
        Ok(self.read(analysis_model).await?)
    }

    async fn find(&self, name_or_phone: &str) -> Result<Vec<String>, HandlerError> {
        let value = name_or_phone.to_owned();
        Ok(self
            .read(move |db| {
                let mut found =
                    db.prepare("SELECT DISTINCT lead_id FROM lead_search WHERE value = ?1 ORDER BY lead_id")?;
                let ids = found.query_map([value], |row| row.get(0))?;
                ids.collect()
            })
            .await?)
    }
}
