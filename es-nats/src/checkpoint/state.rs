//! A projection's state message (its checkpoint, parked events and read model), and what a unit
//! of work does to the parked events.

use chrono::{DateTime, Utc};
use es_core::{ParkedEvent, StreamId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A parked event as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Parked {
    pub(super) position: u64,
    event_id: Uuid,
    aggregate_type: String,
    aggregate_id: String,
    version: u64,
    event_name: String,
    error: String,
    attempts: u32,
    parked_at: DateTime<Utc>,
    pub(super) retry_requested: bool,
}

impl Parked {
    pub(super) fn of(parked: &ParkedEvent) -> Self {
        Self {
            position: parked.position,
            event_id: parked.event_id,
            aggregate_type: parked.stream.aggregate_type.clone(),
            aggregate_id: parked.stream.aggregate_id.clone(),
            version: parked.version,
            event_name: parked.event_name.clone(),
            error: parked.error.clone(),
            attempts: parked.attempts,
            parked_at: parked.parked_at,
            retry_requested: false,
        }
    }

    pub(super) fn event(&self, projection: &str) -> ParkedEvent {
        ParkedEvent {
            projection: projection.to_owned(),
            position: self.position,
            event_id: self.event_id,
            stream: StreamId::new(self.aggregate_type.clone(), self.aggregate_id.clone()),
            version: self.version,
            event_name: self.event_name.clone(),
            error: self.error.clone(),
            attempts: self.attempts,
            parked_at: self.parked_at,
            retry_requested: self.retry_requested,
        }
    }
}

/// What a unit did to the parked events, to be done again on a newer state (see `commit`).
#[derive(Debug, Clone)]
pub(super) enum ParkOp {
    Park(Parked),
    Unpark(u64),
}

pub(super) fn apply(parked: &mut Vec<Parked>, op: &ParkOp) {
    match op {
        ParkOp::Park(new) => match parked.iter_mut().find(|p| p.position == new.position) {
            Some(old) => {
                let first_parked_at = old.parked_at;
                *old = Parked {
                    parked_at: first_parked_at,
                    ..new.clone()
                };
            }
            None => {
                parked.push(new.clone());
                parked.sort_by_key(|p| p.position);
            }
        },
        ParkOp::Unpark(position) => parked.retain(|p| p.position != *position),
    }
}

/// A projection's state, one message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "M: Serialize", deserialize = "M: DeserializeOwned"))]
pub(super) struct State<M> {
    /// The epoch of the latest claim.
    pub(super) epoch: u64,
    pub(super) checkpoint: u64,
    /// In position order.
    pub(super) parked: Vec<Parked>,
    pub(super) model: M,
}

impl<M: Default> Default for State<M> {
    fn default() -> Self {
        Self {
            epoch: 0,
            checkpoint: 0,
            parked: Vec::new(),
            model: M::default(),
        }
    }
}
