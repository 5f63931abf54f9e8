//! The contract of checkpoint stores: units of work that commit read-model writes together with
//! the checkpoint, and the claim that keeps one runner active per projection.

use std::error::Error;

use async_trait::async_trait;

use super::parking::ParkedEvent;

/// A boxed error of a checkpoint store's backend.
type BackendError = Box<dyn Error + Send + Sync>;

/// Durable checkpoints, committed atomically with the read-model writes of the same batch, and
/// the claim that makes one runner the projection's only active one.
///
/// The [`ProjectionRunner`](crate::ProjectionRunner) calls, for each batch:
/// [`begin`](CheckpointStore::begin) (which checks the claim and reads the checkpoint), the
/// handlers on [`context`](CheckpointStore::context), then [`commit`](CheckpointStore::commit)
/// or [`rollback`](CheckpointStore::rollback). The conformance suite (module
/// `es_core::conformance`, feature `conformance`) checks these semantics for every backend.
///
/// # The claim
///
/// [`claim`](CheckpointStore::claim) waits until no other runner holds the projection. A claim
/// can be lost while its runner works (a backend whose claim lives on a connection loses it
/// with the connection). Backends must make that safe: `begin` checks the claim in the same
/// unit of work that reads and locks the checkpoint, and refuses with
/// [`CheckpointError::ClaimLost`] once another runner has claimed the projection, so two units
/// of two runners never both commit under the claim. A backend may regain a claim that was
/// lost but not taken over (its connection came back and nobody else claimed in between).
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// What handlers write to within a unit of work.
    type Context: Send;
    /// One unit of work: the context plus whatever makes it atomic. Dropping it uncommitted
    /// discards every write made through it.
    type Unit: Send;
    /// Proof that this runner is the projection's only active one; released on drop.
    type Claim: Send;

    /// Waits until this runner is the only active one for `projection`.
    async fn claim(&self, projection: &str) -> Result<Self::Claim, CheckpointError>;

    /// Starts a unit of work for the claimed projection: checks that `claim` still holds
    /// (regaining it if it was lost but not taken over) and reads the checkpoint, both within
    /// the unit, which keeps the checkpoint locked until it ends. The runner opens one unit at a
    /// time per claim, and only once it has events to handle.
    async fn begin(&self, claim: &mut Self::Claim) -> Result<(Self::Unit, u64), CheckpointError>;

    /// The context of a unit of work.
    fn context<'u>(&self, unit: &'u mut Self::Unit) -> &'u mut Self::Context;

    /// Commits the unit's writes together with the new checkpoint `position`.
    async fn commit(&self, unit: Self::Unit, position: u64) -> Result<(), CheckpointError>;

    /// Discards the unit's writes. Stores that can reuse its resources (a connection) return
    /// them here; an error says those resources failed (and are dropped), which tells the
    /// runner that a handler's error was likely the connection's. A unit dropped without
    /// `commit` or `rollback` (a cancelled runner) must also discard its writes.
    async fn rollback(&self, unit: Self::Unit) -> Result<(), CheckpointError> {
        drop(unit);
        Ok(())
    }

    /// Sets `parked` aside within the unit, committed with the unit's checkpoint: a new parked
    /// event, or one parked before (retried and failed again), replaced with its new error
    /// and attempts, its retry request cleared, its first `parked_at` kept. Keyed by projection
    /// and position.
    ///
    /// Backends keep parked events in a table of their own; the default refuses, for stores
    /// that keep none (a runner with [`FailurePolicy::Park`](crate::FailurePolicy::Park) then
    /// stops with this error).
    async fn park(&self, unit: &mut Self::Unit, parked: &ParkedEvent) -> Result<(), CheckpointError> {
        let _ = (unit, parked);
        Err(CheckpointError::backend("this checkpoint store keeps no parked events"))
    }

    /// Removes the parked event of `projection` at `position` within the unit (it was
    /// handled at last): the handler's writes and the removal commit together. The default
    /// has nothing to remove.
    async fn unpark(&self, unit: &mut Self::Unit, projection: &str, position: u64) -> Result<(), CheckpointError> {
        let _ = (unit, projection, position);
        Ok(())
    }

    /// The parked events of `projection`, in position order, read outside any unit of work.
    /// The default has none.
    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, CheckpointError> {
        let _ = projection;
        Ok(Vec::new())
    }

    /// Asks for the parked event of `projection` at `position` to be tried again by the
    /// projection's runner. Returns whether there was such a parked event.
    async fn request_retry(&self, projection: &str, position: u64) -> Result<bool, CheckpointError> {
        let _ = (projection, position);
        Ok(false)
    }

    /// Forgets the parked event of `projection` at `position` for good. Returns whether there
    /// was one.
    async fn drop_parked(&self, projection: &str, position: u64) -> Result<bool, CheckpointError> {
        let _ = (projection, position);
        Ok(false)
    }

    /// Within the unit, waits until no unit of `projection` (another projection, whose claim
    /// this runner does not hold) is open, keeps its units out until this unit ends, and
    /// returns its checkpoint: the first half of a blue/green switch
    /// ([`ProjectionRunner::rebuild_beside`](crate::ProjectionRunner::rebuild_beside)). The
    /// default refuses.
    async fn take_over(&self, unit: &mut Self::Unit, projection: &str) -> Result<u64, CheckpointError> {
        let _ = (unit, projection);
        Err(CheckpointError::backend(
            "this checkpoint store cannot switch read models",
        ))
    }

    /// Within the unit, sets the checkpoint of `projection` (taken over with
    /// [`take_over`](CheckpointStore::take_over)) to `position`, committed with the unit. Its
    /// runner, whose claim is untouched, goes on from there. The default refuses.
    async fn hand_over(&self, unit: &mut Self::Unit, projection: &str, position: u64) -> Result<(), CheckpointError> {
        let _ = (unit, projection, position);
        Err(CheckpointError::backend(
            "this checkpoint store cannot switch read models",
        ))
    }

    /// The committed checkpoint of `projection`, read outside any unit of work.
    async fn checkpoint(&self, projection: &str) -> Result<u64, CheckpointError>;

    /// Whether a runner holds the claim on `projection` now, in any process: for tools that
    /// report on projections (`es-cli`). The answer may be stale as soon as it is given.
    async fn claim_status(&self, projection: &str) -> Result<ClaimStatus, CheckpointError>;

    /// Whether `error` is the unit's own connection failing rather than the handler's logic,
    /// so the runner retries it as a transient fault instead of blaming the event. The runner
    /// asks about a handler's error and each of its sources in turn, so a backend only
    /// recognises its driver's error types. The default says no.
    fn is_transient(&self, error: &(dyn Error + 'static)) -> bool {
        let _ = error;
        false
    }

    /// Whether `error` (a handler's error, or one of its sources) says the read model's schema
    /// is missing or wrong, an undefined table or column: no event can succeed until it is
    /// fixed, so the runner stops with [`ProjectionError::ReadModelBroken`](crate::ProjectionError::ReadModelBroken)
    /// instead of skipping or parking every event. The default says no.
    fn is_fatal(&self, error: &(dyn Error + 'static)) -> bool {
        let _ = error;
        false
    }
}

/// Whether a projection's claim is held, as [`CheckpointStore::claim_status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimStatus {
    /// A runner holds the claim: the projection is being kept up to date.
    Held,
    /// No runner holds it.
    Free,
}

/// Why a checkpoint store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Another runner claimed the projection after this one: this runner must stop. Nothing of
    /// the current unit was committed.
    #[error("the claim on the projection was lost: {reason}")]
    ClaimLost {
        /// What happened, for the operator (who took over, or why the claim is gone).
        reason: String,
    },
    /// The backend cannot be reached or its connection failed; trying again later may work.
    #[error("the checkpoint store is unavailable: {0}")]
    Unavailable(#[source] BackendError),
    /// The backend failed in a way that trying again will not fix (a missing table, a
    /// permission, a corrupt checkpoint).
    #[error("the checkpoint store failed: {0}")]
    Backend(#[source] BackendError),
}

impl CheckpointError {
    /// A transient failure: the backend is unreachable or its connection failed.
    pub fn unavailable(error: impl Into<BackendError>) -> Self {
        Self::Unavailable(error.into())
    }

    /// A failure that retrying will not fix.
    pub fn backend(error: impl Into<BackendError>) -> Self {
        Self::Backend(error.into())
    }

    /// Wraps a backend error as [`CheckpointError::Unavailable`] when `transient` (the backend
    /// says it is an outage), else as [`CheckpointError::Backend`].
    pub fn from_backend(error: impl Into<BackendError>, transient: bool) -> Self {
        if transient {
            Self::unavailable(error)
        } else {
            Self::backend(error)
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
