//! Reading part of the global order: by aggregate type and event name, before anything is
//! decoded.

use super::RecordedEvent;

/// Which events of the global order a reader wants, decided by aggregate type and stored name
/// alone: a backend leaves the other rows out before decoding anything of them (their metadata
/// included), so a row that does not decode never stops a reader that does not want it.
///
/// ```
/// use es_core::LogFilter;
///
/// let filter = LogFilter::all().aggregate_types(["lead"]).excluding_names(["lead-noted"]);
/// assert!(filter.matches("lead", "lead-created"));
/// assert!(!filter.matches("lead", "lead-noted"));
/// assert!(!filter.matches("ticket", "lead-created"));
///
/// // An audit of one kind of event, whatever the stream.
/// let shipped = LogFilter::all().names(["OrderShipped"]);
/// assert!(shipped.matches("order", "OrderShipped"));
/// assert!(!shipped.matches("order", "OrderCreated"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    aggregate_types: Vec<String>,
    names: Vec<String>,
    excluded_names: Vec<String>,
}

impl LogFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only events of these aggregate types (all types when the list is empty).
    pub fn aggregate_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.aggregate_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Only events stored under these names (all names when the list is empty).
    pub fn names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.names = names.into_iter().map(Into::into).collect();
        self
    }

    /// Leaves out events stored under these names.
    pub fn excluding_names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.excluded_names = names.into_iter().map(Into::into).collect();
        self
    }

    /// The aggregate types wanted; empty means every type.
    pub fn types(&self) -> &[String] {
        &self.aggregate_types
    }

    /// The event names wanted; empty means every name.
    pub fn included(&self) -> &[String] {
        &self.names
    }

    /// The event names left out.
    pub fn excluded(&self) -> &[String] {
        &self.excluded_names
    }

    /// Whether the filter lets every event through.
    pub fn is_all(&self) -> bool {
        self.aggregate_types.is_empty() && self.names.is_empty() && self.excluded_names.is_empty()
    }

    /// Whether an event of `aggregate_type` stored under `event_name` passes the filter.
    pub fn matches(&self, aggregate_type: &str, event_name: &str) -> bool {
        (self.aggregate_types.is_empty() || self.aggregate_types.iter().any(|wanted| wanted == aggregate_type))
            && (self.names.is_empty() || self.names.iter().any(|wanted| wanted == event_name))
            && !self.excluded_names.iter().any(|excluded| excluded == event_name)
    }
}

/// One page of [`GlobalLog::read_filtered`](super::GlobalLog::read_filtered).
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    /// The events that passed the filter, in position order.
    pub events: Vec<RecordedEvent>,
    /// How many events the read went through: those returned and those left out.
    pub scanned: usize,
    /// The position the read got to: every event up to it was either returned or left out by
    /// the filter. A reader continues after it, and may checkpoint it even when `events` is
    /// empty (it passed events it does not want).
    pub scanned_to: u64,
    /// Whether the read reached the end of what is readable now; otherwise read again from
    /// `scanned_to` right away.
    pub at_head: bool,
}

impl LogPage {
    /// The page of an unfiltered read of up to `limit` events after `after`, filtered after
    /// the fact: for backends whose rows arrive decoded anyway.
    pub fn filter_read(after: u64, limit: usize, events: Vec<RecordedEvent>, filter: &LogFilter) -> Self {
        let (scanned, at_head) = (events.len(), events.len() < limit);
        let scanned_to = events.last().map_or(after, |last| last.position);
        let events = events
            .into_iter()
            .filter(|event| filter.matches(&event.stream.aggregate_type, &event.event_name))
            .collect();
        Self {
            events,
            scanned,
            scanned_to,
            at_head,
        }
    }
}
