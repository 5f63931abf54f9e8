//! A read model kept in memory, with its checkpoints and claims.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use crate::projection::{CheckpointError, CheckpointStore, ClaimStatus, ParkedEvent};

/// A read model kept in memory, with its checkpoints: for tests, examples and small models.
///
/// Each unit of work edits a copy of the model that replaces the original only on commit, so a
/// failed batch leaves no trace. That copy costs time in proportion to the model's size: fine for
/// tests, examples and small models. Use one `InMemoryReadModel` per projection.
///
/// Its claims live in the process and cannot be lost while held.
#[derive(Debug)]
pub struct InMemoryReadModel<M> {
    shared: Arc<Shared<M>>,
}

#[derive(Debug)]
struct Shared<M> {
    committed: Mutex<Committed<M>>,
    /// One lock per projection: the claim of its single active runner.
    claims: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serializes units of work, as a row lock on the checkpoint would.
    units: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct Committed<M> {
    model: M,
    checkpoints: HashMap<String, u64>,
    /// Parked events by projection and position.
    parked: BTreeMap<(String, u64), ParkedEvent>,
}

impl<M> Clone for InMemoryReadModel<M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M: Default> Default for InMemoryReadModel<M> {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                committed: Mutex::new(Committed::default()),
                claims: Mutex::default(),
                units: Arc::default(),
            }),
        }
    }
}

impl<M: Default> InMemoryReadModel<M> {
    /// An empty model with no checkpoints.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<M> InMemoryReadModel<M> {
    /// Queries the committed model.
    pub fn read<T>(&self, query: impl FnOnce(&M) -> T) -> T {
        query(&self.committed().model)
    }

    fn committed(&self) -> std::sync::MutexGuard<'_, Committed<M>> {
        // Commits replace the whole state in one assignment: a panic elsewhere cannot leave it
        // half-written, so recovering from poisoning is safe.
        self.shared.committed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A unit of work on an [`InMemoryReadModel`]: a working copy of the model.
#[derive(Debug)]
pub struct InMemoryUnit<M> {
    model: M,
    projection: String,
    /// Parked events to add (or replace) and to remove, on commit.
    park: Vec<ParkedEvent>,
    unpark: Vec<(String, u64)>,
    /// Checkpoints of other projections to set, on commit.
    handed_over: Vec<(String, u64)>,
    _exclusive: tokio::sync::OwnedMutexGuard<()>,
}

/// A claim on a projection of an [`InMemoryReadModel`]; released on drop.
#[derive(Debug)]
pub struct InMemoryClaim {
    projection: String,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

#[async_trait]
impl<M: Clone + Send + Sync + 'static> CheckpointStore for InMemoryReadModel<M> {
    type Context = M;
    type Unit = InMemoryUnit<M>;
    type Claim = InMemoryClaim;

    async fn claim(&self, projection: &str) -> Result<InMemoryClaim, CheckpointError> {
        let lock = {
            let mut claims = self.shared.claims.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(claims.entry(projection.to_owned()).or_default())
        };
        Ok(InMemoryClaim {
            projection: projection.to_owned(),
            _held: lock.lock_owned().await,
        })
    }

    async fn begin(&self, claim: &mut InMemoryClaim) -> Result<(Self::Unit, u64), CheckpointError> {
        let exclusive = Arc::clone(&self.shared.units).lock_owned().await;
        let committed = self.committed();
        let checkpoint = committed.checkpoints.get(&claim.projection).copied().unwrap_or(0);
        let unit = InMemoryUnit {
            model: committed.model.clone(),
            projection: claim.projection.clone(),
            park: Vec::new(),
            unpark: Vec::new(),
            handed_over: Vec::new(),
            _exclusive: exclusive,
        };
        Ok((unit, checkpoint))
    }

    fn context<'u>(&self, unit: &'u mut Self::Unit) -> &'u mut M {
        &mut unit.model
    }

    async fn commit(&self, unit: Self::Unit, position: u64) -> Result<(), CheckpointError> {
        let mut committed = self.committed();
        committed.model = unit.model;
        committed.checkpoints.insert(unit.projection, position);
        committed.checkpoints.extend(unit.handed_over);
        for key in unit.unpark {
            committed.parked.remove(&key);
        }
        for parked in unit.park {
            committed
                .parked
                .insert((parked.projection.clone(), parked.position), parked);
        }
        Ok(())
    }

    async fn park(&self, unit: &mut Self::Unit, parked: &ParkedEvent) -> Result<(), CheckpointError> {
        let key = (parked.projection.clone(), parked.position);
        unit.unpark.retain(|unparked| *unparked != key);
        let first = self.committed().parked.get(&key).map(|earlier| earlier.parked_at);
        unit.park
            .retain(|earlier| (earlier.projection.as_str(), earlier.position) != (key.0.as_str(), key.1));
        unit.park.push(ParkedEvent {
            parked_at: first.unwrap_or(parked.parked_at),
            retry_requested: false,
            ..parked.clone()
        });
        Ok(())
    }

    async fn unpark(&self, unit: &mut Self::Unit, projection: &str, position: u64) -> Result<(), CheckpointError> {
        unit.park
            .retain(|parked| (parked.projection.as_str(), parked.position) != (projection, position));
        unit.unpark.push((projection.to_owned(), position));
        Ok(())
    }

    async fn take_over(&self, _: &mut Self::Unit, projection: &str) -> Result<u64, CheckpointError> {
        // Every unit of the model, whatever its projection, holds the one units lock.
        Ok(self.committed().checkpoints.get(projection).copied().unwrap_or(0))
    }

    async fn hand_over(&self, unit: &mut Self::Unit, projection: &str, position: u64) -> Result<(), CheckpointError> {
        unit.handed_over.push((projection.to_owned(), position));
        Ok(())
    }

    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, CheckpointError> {
        let committed = self.committed();
        Ok(committed
            .parked
            .values()
            .filter(|parked| parked.projection == projection)
            .cloned()
            .collect())
    }

    async fn request_retry(&self, projection: &str, position: u64) -> Result<bool, CheckpointError> {
        let mut committed = self.committed();
        let parked = committed.parked.get_mut(&(projection.to_owned(), position));
        Ok(parked.map(|parked| parked.retry_requested = true).is_some())
    }

    async fn drop_parked(&self, projection: &str, position: u64) -> Result<bool, CheckpointError> {
        Ok(self
            .committed()
            .parked
            .remove(&(projection.to_owned(), position))
            .is_some())
    }

    async fn checkpoint(&self, projection: &str) -> Result<u64, CheckpointError> {
        Ok(self.committed().checkpoints.get(projection).copied().unwrap_or(0))
    }

    async fn claim_status(&self, projection: &str) -> Result<ClaimStatus, CheckpointError> {
        let claims = self.shared.claims.lock().unwrap_or_else(PoisonError::into_inner);
        let held = claims.get(projection).is_some_and(|lock| lock.try_lock().is_err());
        Ok(if held { ClaimStatus::Held } else { ClaimStatus::Free })
    }
}
