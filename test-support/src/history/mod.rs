//! Histories checked after the fact: writers record every append they attempt and what came of
//! it; once the run is over, [`History::check`] reads the store back through its public API and
//! compares.
//!
//! ```no_run
//! # async fn demo(store: es_postgres::PostgresStore, events: Vec<es_core::NewEvent>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use es_core::{EventStore, ExpectedVersion, StreamId};
//! use es_test_support::history::{Batch, History, Outcome};
//!
//! let history = History::new();
//! let stream = StreamId::new("case", "c-1");
//! let attempt = history.attempt(&Batch::of(&stream, &events));
//! let result = store.append(&stream, ExpectedVersion::NoStream, events).await;
//! attempt.finish(Outcome::of_append(&result));
//! // ... more writers, faults ...
//! let report = history.check(&store).await?;
//! println!("{report}");
//! report.assert_clean();
//! # Ok(()) }
//! ```

mod check;
mod journal;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use es_core::{
    command_event_id, Aggregate, AppendOutcome, CommandError, Executed, NewEvent, RepositoryError, StoreError,
    StoreResult, StreamId,
};
use uuid::Uuid;

pub use check::Report;
pub use journal::Journal;

/// The events of one append: its stream and its events' ids, in batch order. Two attempts with
/// the same ids are the same batch sent again (a retry after a lost answer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Batch {
    /// The stream appended to.
    pub stream: StreamId,
    /// The events' ids, in batch order.
    pub event_ids: Vec<Uuid>,
}

impl Batch {
    /// The batch of `events` for `stream`.
    pub fn of(stream: &StreamId, events: &[NewEvent]) -> Self {
        Self {
            stream: stream.clone(),
            event_ids: events.iter().map(|event| event.event_id).collect(),
        }
    }

    /// The batch a command with id `command_id` appends to `stream` when it decides `events`
    /// events: their ids derive from the command id ([`command_event_id`]), whichever attempt
    /// of the command appends them.
    pub fn of_command(stream: &StreamId, command_id: Uuid, events: usize) -> Self {
        Self {
            stream: stream.clone(),
            event_ids: (0..events)
                .map(|index| command_event_id(command_id, stream, index))
                .collect(),
        }
    }
}

/// What came of one attempt to append a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: the batch is stored from version `first_version` on, at `positions` (in
    /// batch order).
    Ok {
        /// The version of the batch's first event.
        first_version: u64,
        /// The global positions of the batch's events, in batch order.
        positions: Vec<u64>,
    },
    /// Refused as a concurrency conflict: nothing was written.
    Conflict,
    /// Refused for another reason that says nothing was written (a duplicate id, an invalid
    /// batch, a command its aggregate rejected).
    Failed(String),
    /// The answer was lost (an outage, a backend failure, a process killed before it heard): the
    /// batch is stored whole or not at all, and only reading tells which.
    Unknown(String),
}

impl Outcome {
    /// The outcome of [`EventStore::append`](es_core::EventStore::append)'s `result`.
    pub fn of_append(result: &StoreResult<AppendOutcome>) -> Self {
        match result {
            Ok(outcome) => Self::Ok {
                first_version: outcome.previous_version + 1,
                positions: outcome.positions.clone(),
            },
            Err(error) => Self::of_store_error(error),
        }
    }

    /// The outcome an append that failed with `error` had.
    pub fn of_store_error(error: &StoreError) -> Self {
        match error {
            StoreError::Conflict(_) => Self::Conflict,
            StoreError::DuplicateEventId { .. } | StoreError::InvalidBatch { .. } | StoreError::LimitExceeded(_) => {
                Self::Failed(error.to_string())
            }
            // Unavailable and Backend: "either committed whole or not at all".
            other => Self::Unknown(other.to_string()),
        }
    }

    /// The outcome of [`Repository::execute`](es_core::Repository::execute)'s `result`, for the
    /// batch its command id names ([`Batch::of_command`]). A command that retried after an
    /// outage and then failed for good is unknown: an earlier attempt may have committed.
    pub fn of_command<A: Aggregate, E: fmt::Display>(result: &Result<Executed<A>, CommandError<E>>) -> Self {
        match result {
            Ok(executed) => Self::Ok {
                first_version: executed.appended.first().map_or(0, |event| event.version),
                positions: executed.appended.iter().map(|event| event.position).collect(),
            },
            Err(CommandError::Rejected(reason)) => Self::Failed(format!("rejected: {reason}")),
            Err(CommandError::Conflict { .. } | CommandError::Repository(RepositoryError::Conflict(_))) => {
                Self::Conflict
            }
            Err(CommandError::Repository(RepositoryError::Store(error))) => Self::of_store_error(error),
            Err(other) => Self::Unknown(other.to_string()),
        }
    }

    /// Whether the answer was lost.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Self::Unknown(_))
    }
}

/// One attempt to append a batch, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// What was appended.
    pub batch: Batch,
    /// What came of it.
    pub outcome: Outcome,
}

/// Every append attempted in a run, with its outcome, shared by the writers (clones share one
/// history). See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct History {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    /// Where attempts are also written, for a writer in a process that may be killed.
    journal: Option<Arc<Journal>>,
}

/// An attempt under way: [`Pending::finish`] records its outcome. Dropped unfinished (its task
/// was cancelled), it stays [`Outcome::Unknown`].
#[derive(Debug)]
#[must_use = "finish the attempt with its outcome"]
pub struct Pending {
    history: History,
    index: usize,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty history that also writes every attempt, before it is made and once it is
    /// answered, to a [`Journal`] at `path` (created or appended to), so that a process killed
    /// mid-append leaves its history behind. Read it back with [`History::load_journal`].
    pub fn journaled(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            attempts: Arc::default(),
            journal: Some(Arc::new(Journal::create(path)?)),
        })
    }

    /// Starts an attempt to append `batch`: it counts as unknown until it is finished.
    ///
    /// # Panics
    ///
    /// When the journal cannot be written: the history would not be what happened.
    pub fn attempt(&self, batch: &Batch) -> Pending {
        let mut attempts = self.lock();
        let index = attempts.len();
        if let Some(journal) = &self.journal {
            if let Err(error) = journal.attempt(index, batch) {
                panic!("cannot write the journal: {error}");
            }
        }
        attempts.push(Attempt {
            batch: batch.clone(),
            outcome: Outcome::Unknown("no answer yet".into()),
        });
        Pending {
            history: self.clone(),
            index,
        }
    }

    /// Records an attempt that is over.
    pub fn record(&self, batch: &Batch, outcome: Outcome) {
        self.attempt(batch).finish(outcome);
    }

    /// Adds the attempts a [`Journal`] at `path` holds (an attempt without its answer is
    /// unknown: its process died before it heard).
    pub fn load_journal(&self, path: &Path) -> std::io::Result<usize> {
        let attempts = journal::read(path)?;
        let count = attempts.len();
        self.lock().extend(attempts);
        Ok(count)
    }

    /// The attempts so far, in the order they started.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.lock().clone()
    }

    /// How many attempts were made.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no attempt was made.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Attempt>> {
        // Attempts are pushed or replaced whole: a panic elsewhere leaves them consistent.
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Pending {
    /// Records what came of the attempt.
    ///
    /// # Panics
    ///
    /// When the journal cannot be written.
    pub fn finish(self, outcome: Outcome) {
        if let Some(journal) = &self.history.journal {
            if let Err(error) = journal.outcome(self.index, &outcome) {
                panic!("cannot write the journal: {error}");
            }
        }
        if let Some(attempt) = self.history.lock().get_mut(self.index) {
            attempt.outcome = outcome;
        }
    }
}
