//! Claims: one active runner per projection, across processes. An exclusive lock on a file of
//! the projection's own beside the database, which the operating system releases when the
//! holder's process dies, and an epoch in the checkpoint row that fences every unit of work.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use es_core::{CheckpointError, ClaimStatus};
use rusqlite::{params, Connection};
use uuid::Uuid;

use crate::connection::{blocking, Database, Immediate, Role};
use crate::error::SqliteError;
use crate::row::micros;
use crate::sql;

/// Where a claim keeps its connection while no unit of work uses it.
pub(crate) type Slot = Arc<Mutex<Option<Connection>>>;

/// Puts a unit's connection back into its claim's slot, for the next unit.
pub(crate) fn release(slot: &Slot, connection: Connection) {
    // The slot only ever holds a connection or nothing: a panic cannot leave it half-changed.
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(connection);
}

/// Proof that this runner is the projection's only active one: the lock on the projection's
/// claim file and the claim epoch it raised. Dropping it releases the lock.
#[derive(Debug)]
pub struct SqliteClaim {
    pub(crate) projection: String,
    owner: Uuid,
    pub(crate) epoch: i64,
    /// Held locked while the claim lives; closing it releases the lock.
    _lock: File,
    lock_path: PathBuf,
    /// The connection the claim's units of work run on; empty while a unit uses it.
    pub(crate) slot: Slot,
}

impl SqliteClaim {
    /// The runner's id, stored as `claim_owner` in the checkpoint row and in the claim file.
    pub fn owner(&self) -> Uuid {
        self.owner
    }

    /// The claim epoch: raised by every runner that claims the projection.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The file whose lock is the claim.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// The connection left by the last unit, if it was given back.
    pub(crate) fn take_connection(&self) -> Option<Connection> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The claim file of `projection` beside `database`: `<database>-claim-<name>-<hash>`, the name
/// cut down to file-name-safe characters and the hash of the full name keeping names apart.
pub(crate) fn claim_path(database: &Path, projection: &str) -> PathBuf {
    let safe: String = projection
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    // FNV-1a: stable across processes and versions, unlike `DefaultHasher`.
    let hash = projection.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut name = database.file_name().unwrap_or_default().to_owned();
    name.push(format!("-claim-{safe}-{hash:016x}"));
    database.with_file_name(name)
}

/// The claim file of `projection` beside the store's database file (blocking: it resolves the
/// path). The same file under another name (relative, through a link) must get the same claim.
fn claim_file(database: &Database, projection: &str) -> PathBuf {
    let base = std::fs::canonicalize(&database.path).unwrap_or_else(|_| database.path.clone());
    claim_path(&base, projection)
}

/// Whether a runner, of any process, holds the claim on `projection` now (blocking).
///
/// The claim is the exclusive `flock` on the claim file, so the question is whether that lock
/// is taken, and asking for a lock that conflicts with it, without waiting, answers it. The
/// request goes through a file of its own, opened here: `flock` locks belong to an open file
/// description, and one opened separately conflicts with every other, those of other processes
/// and those of this process's own claims alike (unlike `fcntl` record locks, which a process
/// never sees conflict with its own). The request is for a *shared* lock, which conflicts only
/// with the exclusive lock of a claim: two status checks at once do not see each other as a
/// claim. A shared lock taken is released at once, explicitly and again by closing the file.
/// While it is held, for an instant, a runner trying to claim the projection finds it locked
/// and tries again after [`SqliteOptions::claim_retry`](crate::SqliteOptions) (logging that it
/// waits): a status check delays a claim at most that long, and never makes one fail.
///
/// The file is opened without creating it: a claim creates the file before it locks it, so no
/// file means no claim was ever taken (through this path), and checking a projection never
/// claimed leaves nothing behind. A claim file deleted under its holder is the one case this
/// misses (the holder's lock is on the deleted file): then the next claim takes over, and the
/// epoch fences the old holder, which stops at its next unit of work.
pub(crate) fn status(database: &Database, projection: &str) -> Result<ClaimStatus, SqliteError> {
    let path = claim_file(database, projection);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(ClaimStatus::Free),
        Err(source) => return Err(SqliteError::ClaimFile { path, source }),
    };
    match file.try_lock_shared() {
        Ok(()) => {
            // Closing the file releases the lock too, but only once no other descriptor shares
            // its open file description (a process forked meanwhile would keep it).
            let _ = file.unlock();
            Ok(ClaimStatus::Free)
        }
        Err(TryLockError::WouldBlock) => Ok(ClaimStatus::Held),
        Err(TryLockError::Error(source)) => Err(SqliteError::ClaimFile { path, source }),
    }
}

/// Waits until this runner holds the claim file's lock, then raises the claim epoch.
pub(crate) async fn acquire(database: &Arc<Database>, projection: &str) -> Result<SqliteClaim, CheckpointError> {
    if database.is_read_only() {
        return Err(database.read_only("claim a projection").into());
    }
    let lock_path = claim_file(database, projection);
    let path = lock_path.clone();
    let file = blocking(move || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| SqliteError::ClaimFile { path, source })
    })
    .await?;
    let mut waited = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                if !waited {
                    tracing::info!(projection, "another runner holds the projection; waiting to take over");
                    waited = true;
                }
                tokio::time::sleep(database.options.claim_retry).await;
            }
            Err(TryLockError::Error(source)) => {
                return Err(SqliteError::ClaimFile {
                    path: lock_path,
                    source,
                }
                .into())
            }
        }
    }
    if waited {
        tracing::info!(projection, "the previous runner is gone; taking the projection over");
    }
    let owner = Uuid::now_v7();
    let (database, name) = (Arc::clone(database), projection.to_owned());
    let (file, connection, epoch) = blocking(move || {
        let (connection, epoch) = raise_epoch(&database, &name, owner)?;
        // For the operator: who holds the claim. The lock, not the text, is the claim.
        let mut file = file;
        let note = format!("pid {} owner {owner} epoch {epoch}\n", std::process::id());
        let _ = file.set_len(0).and_then(|()| file.write_all(note.as_bytes()));
        Ok::<_, CheckpointError>((file, connection, epoch))
    })
    .await?;
    tracing::info!(projection, %owner, epoch, "claimed the projection");
    Ok(SqliteClaim {
        projection: projection.to_owned(),
        owner,
        epoch,
        _lock: file,
        lock_path,
        slot: Arc::new(Mutex::new(Some(connection))),
    })
}

/// Raises the projection's claim epoch for `owner` on a new connection, the one its units of
/// work will run on (blocking).
fn raise_epoch(database: &Database, projection: &str, owner: Uuid) -> Result<(Connection, i64), SqliteError> {
    let connection = database.connect(Role::Writer)?;
    let epoch = {
        let failed = |error| database.error(error);
        let transaction = Immediate::begin(&connection).map_err(failed)?;
        let epoch: i64 = connection
            .prepare_cached(sql::TAKE_CLAIM)
            .and_then(|mut statement| {
                statement.query_row(
                    params![projection, owner.as_bytes(), micros(chrono::Utc::now())],
                    |row| row.get(0),
                )
            })
            .map_err(failed)?;
        transaction.commit().map_err(failed)?;
        epoch
    };
    Ok((connection, epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_files_sit_beside_the_database_and_keep_names_apart() {
        let database = Path::new("/data/app.db");
        let plain = claim_path(database, "tickets");
        assert_eq!(plain.parent(), Some(Path::new("/data")));
        let name = plain.file_name().and_then(|name| name.to_str()).unwrap_or_default();
        assert!(name.starts_with("app.db-claim-tickets-"), "{name}");
        assert_ne!(claim_path(database, "a/b"), claim_path(database, "a_b"));
        assert_eq!(claim_path(database, "a/b"), claim_path(database, "a/b"));
        let long = claim_path(database, &"x".repeat(1000));
        assert!(long.as_os_str().len() < 200);
        assert!(!claim_path(database, "../../etc/passwd")
            .to_string_lossy()
            .contains("../"));
    }
}
