//! The global log: every event of every stream in one order, for projections and tools.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{LogFilter, LogPage, LogReplay, LogReplayFn, LoggedEvent, RecordedEvent, StoreResult};

/// The store's global order: every event of every stream, numbered by position. Only
/// projections (and tools that tail the store) need it; a backend may offer streams without it.
///
/// The contract, checked by the conformance suite: [`GlobalLog::read_all`] returns events in
/// position order and never skips a committed event, even one whose transaction commits after
/// events with higher positions.
#[async_trait]
pub trait GlobalLog: Send + Sync {
    /// Reads up to `limit` events with positions above `after`, in position order.
    ///
    /// Never skips an event: if it returns an event at position `p`, every event with a lower
    /// position that will ever be visible has already been returned by a read with a lower
    /// `after`. Start from `after = 0`.
    ///
    /// The price of that guarantee: a read returns nothing past an event whose transaction may
    /// still commit. On PostgreSQL that is any write transaction open in the cluster, so a read
    /// right after this process's own append may not return it yet while another writer's
    /// transaction is open (see es-postgres's docs on the visibility horizon). To read your own
    /// writes, wait for their position: [`ProjectionRunner::progress`](crate::ProjectionRunner)
    /// or [`wait_for_checkpoint`](crate::wait_for_checkpoint).
    async fn read_all(&self, after: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>>;

    /// Reads up to `limit` events after `after` that pass `filter`, deciding by aggregate type
    /// and stored name before decoding anything else of a row: a row the filter leaves out is
    /// never decoded, so one that would not decode cannot fail the read. The same guarantee as
    /// [`read_all`](GlobalLog::read_all): no event that passes the filter is ever skipped.
    ///
    /// The default filters a [`read_all`](GlobalLog::read_all) page after the fact (fine for
    /// stores whose rows are decoded anyway); SQL backends override it to filter in the query.
    async fn read_filtered(&self, after: u64, limit: usize, filter: &LogFilter) -> StoreResult<LogPage> {
        let events = self.read_all(after, limit).await?;
        Ok(LogPage::filter_read(after, limit, events, filter))
    }

    /// Lends every event after `after` that passes `filter` to `apply`, in position order,
    /// borrowed from the store's rows: what a rebuild or a bulk read needs, without an envelope
    /// copied per event. Stops early when `apply` breaks.
    ///
    /// The same guarantee as [`read_all`](GlobalLog::read_all): no event is ever skipped. The
    /// replay goes up to the head of the log as it is when the replay starts; events committed
    /// meanwhile may be lent or not, and a replay from the returned
    /// [`scanned_to`](LogReplay::scanned_to) finds those that were not.
    ///
    /// The default pages through [`read_filtered`](GlobalLog::read_filtered); SQL backends
    /// override it with one query, bounded once. On such a backend, breaking early from a long
    /// replay may cost the connection the query ran on: page with `read_all` to read a little
    /// at a time.
    async fn replay_all(&self, after: u64, filter: &LogFilter, apply: &mut LogReplayFn<'_>) -> StoreResult<LogReplay> {
        const PAGE: usize = 1000;
        let mut replay = LogReplay::starting_at(after);
        loop {
            let page = self.read_filtered(replay.scanned_to, PAGE, filter).await?;
            for (lent, event) in page.events.iter().enumerate() {
                if apply(LoggedEvent::of(event)).is_break() {
                    replay.scanned += lent as u64 + 1;
                    replay.scanned_to = event.position;
                    replay.stopped = true;
                    return Ok(replay);
                }
            }
            replay.scanned += page.scanned as u64;
            replay.scanned_to = page.scanned_to;
            if page.at_head || page.scanned == 0 {
                return Ok(replay);
            }
        }
    }

    /// What [`GlobalLog::read_all`] would still return after `after`: how many events, and the
    /// last one's position and time. Used for progress and lag reports.
    ///
    /// The default pages through `read_all`; backends override it with one query.
    async fn tail(&self, after: u64) -> StoreResult<Tail> {
        let mut tail = Tail {
            events: 0,
            head_position: after,
            head_recorded_at: None,
        };
        loop {
            let page = self.read_all(tail.head_position, 1000).await?;
            let Some(last) = page.last() else {
                return Ok(tail);
            };
            tail.events += page.len() as u64;
            tail.head_position = last.position;
            tail.head_recorded_at = Some(last.recorded_at);
        }
    }

    /// How many events after `after` are committed but not in the global log yet: held back
    /// until older write transactions still open end (on PostgreSQL, by any session of the
    /// cluster; see `es_postgres`). A reader that must see every stored event, not just a
    /// gap-free prefix (`es doctor`), waits for it to reach 0 or says what it left out.
    ///
    /// The default, for stores whose log shows each event as it commits, is 0.
    async fn unsettled(&self, after: u64) -> StoreResult<u64> {
        let _ = after;
        Ok(0)
    }

    /// What holds [`unsettled`](GlobalLog::unsettled) events back, as an operator reads it:
    /// on PostgreSQL the oldest session of the cluster with a write transaction open (its
    /// process id, its application when it set one, state, since when and last statement), or a
    /// prepared transaction. What PostgreSQL shows of another role's session depends on the
    /// reader's privileges (`pg_read_all_stats`).
    /// `None` when nothing does, or when the store cannot tell.
    async fn held_back_by(&self) -> StoreResult<Option<String>> {
        Ok(None)
    }
}

/// The part of the global order after some position; see [`GlobalLog::tail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    /// How many events follow the position.
    pub events: u64,
    /// The position of the last of them (the given position when there are none).
    pub head_position: u64,
    /// When the last of them was recorded, if there are any.
    pub head_recorded_at: Option<DateTime<Utc>>,
}
