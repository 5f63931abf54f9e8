//! The units of work of this process's projections open on a database file: each holds
//! SQLite's write lock, so a write through the store that waited out the busy timeout while one
//! of them was open all along waited for it (see `SqliteError::HeldByProjection`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::connection::Database;

/// The open units, by a number of their own: their projection and when they began.
#[derive(Debug, Default)]
pub(crate) struct OpenUnits {
    open: Mutex<BTreeMap<u64, (String, Instant)>>,
    next: AtomicU64,
}

impl OpenUnits {
    fn open(&self) -> MutexGuard<'_, BTreeMap<u64, (String, Instant)>> {
        // Inserts and removals of whole entries: a panic cannot leave the map half-changed.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The projection of the unit open longest, and when it began.
    pub(crate) fn oldest(&self) -> Option<(String, Instant)> {
        self.open().values().min_by_key(|(_, since)| *since).cloned()
    }
}

impl Database {
    /// Notes that a unit of work of `projection` holds the write lock, until the mark is
    /// dropped (with the unit).
    pub(crate) fn unit_opened(self: &Arc<Self>, projection: &str) -> UnitMark {
        let id = self.units.next.fetch_add(1, Ordering::Relaxed);
        self.units.open().insert(id, (projection.to_owned(), Instant::now()));
        UnitMark {
            database: Arc::clone(self),
            id,
        }
    }
}

/// A unit of work's note in [`OpenUnits`]; dropping it (with the unit) takes the note out.
#[derive(Debug)]
pub(crate) struct UnitMark {
    database: Arc<Database>,
    id: u64,
}

impl Drop for UnitMark {
    fn drop(&mut self) {
        self.database.units.open().remove(&self.id);
    }
}
