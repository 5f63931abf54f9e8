//! Closing streams in memory: one lock makes each change atomic.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{InMemoryStore, State};
use crate::lifecycle::{check_change, ClosedQuery, StreamChange, StreamClosed, StreamLifecycle, StreamStatus};
use crate::store::{EventStream, StoreResult, StreamId, StreamSlice};

impl State {
    /// Records `stream` as `status`, with what the change did to its events, and logs it.
    fn close(
        &mut self,
        stream: &StreamId,
        status: StreamStatus,
        events: u64,
        change: StreamChange,
        now: DateTime<Utc>,
    ) -> StoreResult<StreamClosed> {
        let version = match self.closures.get(stream) {
            Some(closed) => closed.version,
            None => self.version_of(stream),
        };
        let closed = StreamClosed::new(stream, status, version, events, change);
        let logged = closed.to_new_event()?;
        self.push(&closed.lifecycle_stream(), vec![logged], now);
        self.closures.insert(stream.clone(), closed.clone());
        Ok(closed)
    }
}

#[async_trait]
impl StreamLifecycle for InMemoryStore {
    async fn close(&self, stream: &StreamId, status: StreamStatus, change: StreamChange) -> StoreResult<StreamClosed> {
        let now = (self.clock.0)();
        let mut state = self.lock();
        if let Some(done) = check_change(stream, state.closures.get(stream).cloned(), status)? {
            return Ok(done);
        }
        let hot = state.streams.get(stream).map_or(0, Vec::len);
        let archived = state.archived.get(stream).map_or(0, Vec::len);
        let moved = match status {
            StreamStatus::Archived => hot,
            StreamStatus::Deleted => hot + archived,
            _ => 0,
        };
        let closed = state.close(stream, status, moved as u64, change, now)?;
        match status {
            StreamStatus::Archived => {
                if let Some(indexes) = state.streams.remove(stream) {
                    state.archived.insert(stream.clone(), indexes);
                }
                state.snapshots.remove(stream);
            }
            StreamStatus::Deleted => {
                let removed = [state.streams.remove(stream), state.archived.remove(stream)];
                for index in removed.into_iter().flatten().flatten() {
                    if let Some(event) = state.events[index].take() {
                        state.event_ids.remove(&event.event_id);
                    }
                }
                state.snapshots.remove(stream);
            }
            _ => {}
        }
        drop(state);
        self.appended.send_modify(|count| *count += 1);
        Ok(closed)
    }

    fn read_archived<'a>(&'a self, stream: &'a StreamId, slice: StreamSlice) -> EventStream<'a> {
        let state = self.lock();
        let events = state.slice_of(state.archived.get(stream), slice);
        Box::pin(futures_util::stream::iter(events))
    }

    async fn closed_streams(&self, query: &ClosedQuery) -> StoreResult<Vec<StreamClosed>> {
        let state = self.lock();
        Ok(state
            .closures
            .values()
            .filter(|closed| query.matches(closed))
            .take(query.limit)
            .cloned()
            .collect())
    }
}
