//! A small aggregate for the repository tests: a support case with notes.

use es_core::{event, Aggregate, Apply, Metadata, Repository, UpcastError};
use es_postgres::PostgresStore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[event(name = "CaseOpened")]
#[derive(Debug, Clone, PartialEq)]
pub struct CaseOpened {
    pub title: String,
}

/// Version 2 added a priority; version-1 notes are upcast with priority 0.
#[event(name = "NoteAdded", version = 2)]
#[upcast(from = 1, json = note_v1_to_v2)]
#[derive(Debug, Clone, PartialEq)]
pub struct NoteAdded {
    pub text: String,
    pub priority: u8,
}

fn note_v1_to_v2(mut payload: Value) -> Result<Value, UpcastError> {
    let object = payload
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("not an object"))?;
    object.insert("priority".into(), 0.into());
    Ok(payload)
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum CaseEvent {
    Opened(CaseOpened),
    Noted(NoteAdded),
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "case", id = String, event = CaseEvent)]
pub struct Case {
    pub title: String,
    pub notes: Vec<String>,
}

impl Apply<CaseOpened> for Case {
    fn apply(&mut self, event: &CaseOpened) {
        self.title = event.title.clone();
    }
}

impl Apply<NoteAdded> for Case {
    fn apply(&mut self, event: &NoteAdded) {
        self.notes.push(event.text.clone());
    }
}

/// A command: open the case.
pub fn open(title: &str) -> impl Fn(&Case) -> Vec<CaseEvent> + '_ {
    move |_| {
        vec![CaseOpened {
            title: title.to_owned(),
        }
        .into()]
    }
}

/// A command: add a note.
pub fn note(text: &str) -> impl Fn(&Case) -> Vec<CaseEvent> + '_ {
    move |_| {
        vec![NoteAdded {
            text: text.to_owned(),
            priority: 1,
        }
        .into()]
    }
}

impl Case {
    /// A command that can be refused: close the case with a last note, once.
    pub fn close(&self, text: &str) -> Result<Vec<CaseEvent>, String> {
        if self.notes.last().is_some_and(|last| last.starts_with("closed:")) {
            return Err("the case is already closed".into());
        }
        Ok(vec![NoteAdded {
            text: format!("closed: {text}"),
            priority: 9,
        }
        .into()])
    }
}

/// The repository of cases on PostgreSQL.
pub type Cases = Repository<Case, PostgresStore>;

/// Opens a new case titled "Printer" through `cases` (its version is then 1); returns its id.
pub async fn opened_case(cases: &Cases) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    cases
        .execute(&id, Metadata::new(), open("Printer"))
        .await
        .expect("open");
    id
}
