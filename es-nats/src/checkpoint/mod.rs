//! Projection checkpoints on JetStream: per projection, one message holding the checkpoint, the
//! parked events and the read model itself (a document), replaced atomically; and one message
//! holding the claim, a lease kept alive by its holder.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::Stream;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use es_core::{CheckpointError, CheckpointStore, ClaimStatus, ParkedEvent};
use futures_util::TryStreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{token, untoken};
use crate::error::NatsError;
use crate::js::{last_on, publish_if, Cas};
use crate::store::{bucket, bucket_name};
use crate::NatsStore;

mod state;

use state::{apply, ParkOp, Parked, State};

/// How long a claim lives without being renewed; its holder renews it every third of that.
const DEFAULT_LEASE: Duration = Duration::from_secs(6);

/// How often a waiting claim looks again whether the projection is free.
const CLAIM_POLL: Duration = Duration::from_millis(100);

/// Checkpoints, parked events and read models of projections, kept in the store's key-value
/// bucket `P_checkpoints` (keys `<projection>.state` and `<projection>.claim`, the projection's
/// name as a token).
///
/// The read model is `M`, a document (any serde type with a default) that handlers change
/// through the unit's [`context`](CheckpointStore::context): a unit reads the projection's
/// state (checkpoint, parked events, model) as one message and commits it as one message,
/// conditioned on nothing else having been written there since, so the model and the
/// checkpoint move together. The whole state must fit one message (the server's
/// `max_payload`): this suits small read models (counters, indexes, lists of modest size).
/// Larger read models belong in a database of their own, with that database's checkpoints.
///
/// Claims are leases: a runner's claim is a message naming it as the owner with an expiry,
/// renewed in the background; a claim that stops being renewed (its process died) expires
/// after the lease (6 s by default), and a dropped claim is released at once. Each claim has an
/// epoch, and a new claim first stamps its epoch on the projection's state: a unit of an older
/// claim then fails to commit with [`CheckpointError::ClaimLost`]. Leases compare wall clocks of
/// the processes involved: keep them within a fraction of the lease of each other.
///
/// Blue/green switches ([`CheckpointStore::take_over`]) are not supported.
pub struct NatsCheckpoints<M> {
    inner: Arc<Checkpoints>,
    model: PhantomData<fn() -> M>,
}

impl<M> Clone for NatsCheckpoints<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            model: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for NatsCheckpoints<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCheckpoints")
            .field("lease", &self.inner.lease)
            .finish_non_exhaustive()
    }
}

struct Checkpoints {
    store: NatsStore,
    stream: Stream,
    lease: Duration,
}

impl NatsStore {
    /// The checkpoint store of this store's projections, with read models of type `M`. Creates
    /// the key-value bucket `P_checkpoints` when it does not exist.
    pub async fn checkpoints<M>(&self) -> Result<NatsCheckpoints<M>, NatsError> {
        let config = bucket(
            &self.inner.options,
            &bucket_name(&self.inner.options.prefix, "checkpoints"),
        );
        let name = config.name.clone();
        let stream = self
            .inner
            .context
            .get_or_create_stream(config)
            .await
            .map_err(|error| NatsError::Setup {
                stream: name,
                reason: error.to_string(),
            })?;
        Ok(NatsCheckpoints {
            inner: Arc::new(Checkpoints {
                store: self.clone(),
                stream,
                lease: DEFAULT_LEASE,
            }),
            model: PhantomData,
        })
    }
}

/// A projection's claim, one message.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimRecord {
    owner: Uuid,
    epoch: u64,
    expires_at: DateTime<Utc>,
    released: bool,
}

impl ClaimRecord {
    fn is_held(&self) -> bool {
        !self.released && self.expires_at > Utc::now()
    }
}

/// Proof of a claim on one projection; renewed in the background, released when dropped.
pub struct NatsClaim {
    projection: String,
    owner: Uuid,
    epoch: u64,
    renewal: tokio::task::JoinHandle<()>,
    checkpoints: Arc<Checkpoints>,
}

impl std::fmt::Debug for NatsClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsClaim")
            .field("projection", &self.projection)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Drop for NatsClaim {
    fn drop(&mut self) {
        self.renewal.abort();
        let (checkpoints, projection, owner) = (Arc::clone(&self.checkpoints), self.projection.clone(), self.owner);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // Best effort: a release that fails leaves the lease to expire.
                let _ = checkpoints.release(&projection, owner).await;
            });
        }
    }
}

/// One unit of work: the projection's state as read, changed by the handlers.
pub struct NatsUnit<M> {
    projection: String,
    epoch: u64,
    /// The state message's sequence when read (0: none yet).
    sequence: u64,
    checkpoint: u64,
    state: State<M>,
    ops: Vec<ParkOp>,
}

impl<M> std::fmt::Debug for NatsUnit<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsUnit")
            .field("projection", &self.projection)
            .field("checkpoint", &self.checkpoint)
            .finish_non_exhaustive()
    }
}

impl Checkpoints {
    fn subject(&self, projection: &str, kind: &str) -> String {
        format!("{}.{}.{kind}", self.key_prefix(), token(projection))
    }

    /// `$KV.<prefix>_checkpoints`: what every key's subject starts with.
    fn key_prefix(&self) -> String {
        format!("$KV.{}", bucket_name(&self.store.inner.options.prefix, "checkpoints"))
    }

    async fn read<T: DeserializeOwned>(&self, subject: &str) -> Result<Option<(u64, T)>, NatsError> {
        let Some(message) = last_on(&self.stream, subject, "read a projection's checkpoint").await? else {
            return Ok(None);
        };
        decode(&message).map(|value| Some((message.sequence, value)))
    }

    async fn write<T: Serialize>(&self, subject: &str, expected: u64, value: &T) -> Result<Cas, NatsError> {
        let payload = serde_json::to_vec(value).map_err(|error| NatsError::Corrupt(error.to_string()))?;
        publish_if(
            &self.store.inner.context,
            &self.stream,
            subject,
            expected,
            Bytes::from(payload),
            "write a projection's checkpoint",
        )
        .await
    }

    async fn release(&self, projection: &str, owner: Uuid) -> Result<(), NatsError> {
        let subject = self.subject(projection, "claim");
        if let Some((sequence, mut record)) = self.read::<ClaimRecord>(&subject).await? {
            if record.owner == owner {
                record.released = true;
                self.write(&subject, sequence, &record).await?;
            }
        }
        Ok(())
    }

    /// Renews the claim of `owner` every third of the lease until it is no longer the owner.
    async fn renew(self: Arc<Self>, projection: String, owner: Uuid) {
        let subject = self.subject(&projection, "claim");
        loop {
            tokio::time::sleep(self.lease / 3).await;
            match self.read::<ClaimRecord>(&subject).await {
                Ok(Some((sequence, mut record))) if record.owner == owner && !record.released => {
                    record.expires_at = expiry(self.lease);
                    // A failure is retried at the next tick; the lease outlives two of them.
                    let _ = self.write(&subject, sequence, &record).await;
                }
                Ok(_) => return,
                Err(_) => {}
            }
        }
    }

    /// Stamps `epoch` on the projection's state, so units of older claims cannot commit.
    async fn fence<M: Serialize + DeserializeOwned + Default>(
        &self,
        projection: &str,
        epoch: u64,
    ) -> Result<(), NatsError> {
        let subject = self.subject(projection, "state");
        loop {
            let (sequence, mut state) = self.read::<State<M>>(&subject).await?.unwrap_or_default();
            if state.epoch >= epoch {
                return Ok(());
            }
            state.epoch = epoch;
            if let Cas::Stored = self.write(&subject, sequence, &state).await? {
                return Ok(());
            }
        }
    }
}

fn decode<T: DeserializeOwned>(message: &StreamMessage) -> Result<T, NatsError> {
    serde_json::from_slice(&message.payload)
        .map_err(|error| NatsError::Corrupt(format!("{} does not decode: {error}", message.subject)))
}

fn expiry(lease: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::seconds(6))
}

impl<M> NatsCheckpoints<M>
where
    M: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static,
{
    /// The committed read model of `projection` (the default when nothing was committed).
    pub async fn model(&self, projection: &str) -> Result<M, NatsError> {
        let subject = self.inner.subject(projection, "state");
        Ok(self
            .inner
            .read::<State<M>>(&subject)
            .await?
            .map(|(_, state)| state.model)
            .unwrap_or_default())
    }

    /// The committed read model of every projection that has a state, by projection name.
    pub async fn models(&self) -> Result<Vec<(String, M)>, NatsError> {
        let filter = format!("{}.*.state", self.inner.key_prefix());
        let subjects: Vec<(String, usize)> = self
            .inner
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(|error| NatsError::request("list projections", error, true))?
            .try_collect()
            .await
            .map_err(|error| NatsError::request("list projections", error, true))?;
        let mut models = Vec::with_capacity(subjects.len());
        for (subject, _) in subjects {
            let Some(projection) = subject.rsplit('.').nth(1).and_then(untoken) else {
                continue;
            };
            if let Some((_, state)) = self.inner.read::<State<M>>(&subject).await? {
                models.push((projection, state.model));
            }
        }
        models.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(models)
    }

    /// Changes the parked events of `projection` outside any unit: `change` returns whether it
    /// found what it looked for.
    async fn change_parked(
        &self,
        projection: &str,
        change: impl Fn(&mut Vec<Parked>) -> bool + Send + Sync,
    ) -> Result<bool, CheckpointError> {
        let subject = self.inner.subject(projection, "state");
        loop {
            let Some((sequence, mut state)) = self.inner.read::<State<M>>(&subject).await? else {
                return Ok(false);
            };
            if !change(&mut state.parked) {
                return Ok(false);
            }
            if let Cas::Stored = self.inner.write(&subject, sequence, &state).await? {
                return Ok(true);
            }
        }
    }
}

#[async_trait]
impl<M> CheckpointStore for NatsCheckpoints<M>
where
    M: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static,
{
    type Context = M;
    type Unit = NatsUnit<M>;
    type Claim = NatsClaim;

    async fn claim(&self, projection: &str) -> Result<NatsClaim, CheckpointError> {
        let subject = self.inner.subject(projection, "claim");
        let owner = Uuid::new_v4();
        loop {
            let current = self.inner.read::<ClaimRecord>(&subject).await?;
            let free = current.as_ref().is_none_or(|(_, record)| !record.is_held());
            if free {
                let (sequence, epoch) =
                    current.map_or((0, 1), |(sequence, record)| (sequence, record.epoch.saturating_add(1)));
                let record = ClaimRecord {
                    owner,
                    epoch,
                    expires_at: expiry(self.inner.lease),
                    released: false,
                };
                if let Cas::Stored = self.inner.write(&subject, sequence, &record).await? {
                    let renewal = tokio::spawn(Arc::clone(&self.inner).renew(projection.to_owned(), owner));
                    let claim = NatsClaim {
                        projection: projection.to_owned(),
                        owner,
                        epoch,
                        renewal,
                        checkpoints: Arc::clone(&self.inner),
                    };
                    self.inner.fence::<M>(projection, epoch).await?;
                    return Ok(claim);
                }
                continue;
            }
            tokio::time::sleep(CLAIM_POLL).await;
        }
    }

    async fn begin(&self, claim: &mut NatsClaim) -> Result<(NatsUnit<M>, u64), CheckpointError> {
        let subject = self.inner.subject(&claim.projection, "state");
        let (sequence, state) = self.inner.read::<State<M>>(&subject).await?.unwrap_or_default();
        if state.epoch != claim.epoch {
            return Err(CheckpointError::ClaimLost {
                reason: format!(
                    "projection {} was claimed again (epoch {}, this claim's {})",
                    claim.projection, state.epoch, claim.epoch
                ),
            });
        }
        let checkpoint = state.checkpoint;
        let unit = NatsUnit {
            projection: claim.projection.clone(),
            epoch: claim.epoch,
            sequence,
            checkpoint,
            state,
            ops: Vec::new(),
        };
        Ok((unit, checkpoint))
    }

    fn context<'u>(&self, unit: &'u mut NatsUnit<M>) -> &'u mut M {
        &mut unit.state.model
    }

    async fn commit(&self, mut unit: NatsUnit<M>, position: u64) -> Result<(), CheckpointError> {
        let subject = self.inner.subject(&unit.projection, "state");
        unit.state.checkpoint = position;
        loop {
            if let Cas::Stored = self.inner.write(&subject, unit.sequence, &unit.state).await? {
                return Ok(());
            }
            // Something was written since the unit began: an operator's change to the parked
            // events (done again on top of it), or a newer claim (this unit must not commit).
            let (sequence, fresh) = self.inner.read::<State<M>>(&subject).await?.unwrap_or_default();
            if fresh.epoch != unit.epoch || fresh.checkpoint != unit.checkpoint {
                return Err(CheckpointError::ClaimLost {
                    reason: format!("projection {} was claimed again while a unit was open", unit.projection),
                });
            }
            let mut parked = fresh.parked;
            for op in &unit.ops {
                apply(&mut parked, op);
            }
            unit.state.parked = parked;
            unit.sequence = sequence;
        }
    }

    async fn park(&self, unit: &mut NatsUnit<M>, parked: &ParkedEvent) -> Result<(), CheckpointError> {
        let op = ParkOp::Park(Parked::of(parked));
        apply(&mut unit.state.parked, &op);
        unit.ops.push(op);
        Ok(())
    }

    async fn unpark(&self, unit: &mut NatsUnit<M>, projection: &str, position: u64) -> Result<(), CheckpointError> {
        if projection != unit.projection {
            return Err(CheckpointError::backend(format!(
                "a unit of {} cannot unpark an event of {projection}",
                unit.projection
            )));
        }
        let op = ParkOp::Unpark(position);
        apply(&mut unit.state.parked, &op);
        unit.ops.push(op);
        Ok(())
    }

    async fn parked(&self, projection: &str) -> Result<Vec<ParkedEvent>, CheckpointError> {
        let subject = self.inner.subject(projection, "state");
        let state = self.inner.read::<State<M>>(&subject).await?;
        Ok(state
            .map(|(_, state)| state.parked.iter().map(|parked| parked.event(projection)).collect())
            .unwrap_or_default())
    }

    async fn request_retry(&self, projection: &str, position: u64) -> Result<bool, CheckpointError> {
        self.change_parked(projection, |parked| {
            parked
                .iter_mut()
                .find(|p| p.position == position)
                .map(|p| p.retry_requested = true)
                .is_some()
        })
        .await
    }

    async fn drop_parked(&self, projection: &str, position: u64) -> Result<bool, CheckpointError> {
        self.change_parked(projection, |parked| {
            let before = parked.len();
            parked.retain(|p| p.position != position);
            parked.len() != before
        })
        .await
    }

    async fn checkpoint(&self, projection: &str) -> Result<u64, CheckpointError> {
        let subject = self.inner.subject(projection, "state");
        let state = self.inner.read::<State<M>>(&subject).await?;
        Ok(state.map_or(0, |(_, state)| state.checkpoint))
    }

    async fn claim_status(&self, projection: &str) -> Result<ClaimStatus, CheckpointError> {
        let subject = self.inner.subject(projection, "claim");
        let record = self.inner.read::<ClaimRecord>(&subject).await?;
        Ok(match record {
            Some((_, record)) if record.is_held() => ClaimStatus::Held,
            _ => ClaimStatus::Free,
        })
    }

    fn is_transient(&self, error: &(dyn std::error::Error + 'static)) -> bool {
        error.downcast_ref::<NatsError>().is_some_and(NatsError::is_transient)
    }
}
