//! The repository's cache of recently commanded aggregates' states.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use super::Versioned;
use crate::store::StreamId;

/// States of recently commanded aggregates, kept by [`Repository::with_cache`].
pub(super) trait StateCache<A>: Send + Sync {
    /// Takes the cached state of `stream` out of the cache.
    fn take(&self, stream: &StreamId) -> Option<Versioned<A>>;
    /// Caches `state` for `stream`.
    fn put(&self, stream: &StreamId, state: Versioned<A>);
    /// Caches a copy of `aggregate` at `version` for `stream`.
    fn put_copy(&self, stream: &StreamId, aggregate: &A, version: u64);
}

/// A bounded cache that forgets the least recently stored entry first.
pub(super) struct RecentStates<A> {
    capacity: usize,
    entries: Mutex<Recent<A>>,
}

/// The cached states, and the order they were stored in.
struct Recent<A> {
    states: HashMap<StreamId, Versioned<A>>,
    /// Streams in the order they were stored, oldest first; may name streams taken out since.
    order: VecDeque<StreamId>,
}

impl<A> RecentStates<A> {
    /// A cache of at most `capacity` states.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(Recent {
                states: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }
}

impl<A: Clone + Send + Sync> StateCache<A> for RecentStates<A> {
    fn take(&self, stream: &StreamId) -> Option<Versioned<A>> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.states.remove(stream)
    }

    fn put(&self, stream: &StreamId, state: Versioned<A>) {
        let mut guard = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Recent { states, order } = &mut *guard;
        if states.insert(stream.clone(), state).is_none() {
            order.push_back(stream.clone());
        }
        // `order` may name streams taken out since: skip those while evicting.
        while states.len() > self.capacity {
            match order.pop_front() {
                Some(oldest) => {
                    states.remove(&oldest);
                }
                None => break,
            }
        }
        if order.len() > self.capacity.saturating_mul(2) {
            order.retain(|stream| states.contains_key(stream));
        }
    }

    fn put_copy(&self, stream: &StreamId, aggregate: &A, version: u64) {
        self.put(
            stream,
            Versioned {
                aggregate: aggregate.clone(),
                version,
            },
        );
    }
}
