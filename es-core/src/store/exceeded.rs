//! Which limit an append exceeded, and by how much: the error every store returns for it.

use std::fmt;

use super::StreamId;

/// One of the limits of [`Limits`](crate::Limits), or a backend's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`Limits::max_payload_bytes`](crate::Limits::max_payload_bytes).
    PayloadBytes,
    /// [`Limits::max_metadata_bytes`](crate::Limits::max_metadata_bytes).
    MetadataBytes,
    /// [`Limits::max_event_name_bytes`](crate::Limits::max_event_name_bytes).
    EventNameBytes,
    /// [`Limits::max_stream_id_bytes`](crate::Limits::max_stream_id_bytes).
    StreamIdBytes,
    /// [`Limits::max_batch_events`](crate::Limits::max_batch_events).
    BatchEvents,
    /// [`Limits::max_batch_bytes`](crate::Limits::max_batch_bytes).
    BatchBytes,
    /// The most events one database transaction can hold, over all its appends: 2^20 - 1 on
    /// PostgreSQL, whose positions number a transaction's events in 20 bits.
    TransactionEvents,
}

impl Limit {
    /// The limit's name: the field of [`Limits`](crate::Limits) that sets it, or the backend's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::PayloadBytes => "max_payload_bytes",
            Self::MetadataBytes => "max_metadata_bytes",
            Self::EventNameBytes => "max_event_name_bytes",
            Self::StreamIdBytes => "max_stream_id_bytes",
            Self::BatchEvents => "max_batch_events",
            Self::BatchBytes => "max_batch_bytes",
            Self::TransactionEvents => "max_transaction_events",
        }
    }

    /// What is measured, for messages: "payload", "batch", ...
    fn subject(self) -> &'static str {
        match self {
            Self::PayloadBytes => "payload",
            Self::MetadataBytes => "metadata",
            Self::EventNameBytes => "event name",
            Self::StreamIdBytes => "stream id",
            Self::BatchEvents | Self::BatchBytes => "batch",
            Self::TransactionEvents => "transaction",
        }
    }

    /// The unit of the measure.
    fn unit(self) -> &'static str {
        match self {
            Self::BatchEvents | Self::TransactionEvents => "events",
            // What is measured: the `/` between type and id does not count.
            Self::StreamIdBytes => "bytes of type and id",
            _ => "bytes",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An append refused because it is over one of the store's [`Limits`](crate::Limits) (or a backend's own
/// limit, [`Limit::TransactionEvents`]). Nothing was written; the same batch will be refused
/// again: split it, or shrink the event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LimitExceeded {
    /// The stream appended to.
    pub stream: StreamId,
    /// Which limit.
    pub limit: Limit,
    /// The event over the limit, by its index in the batch (from 0); `None` when the limit is
    /// on the stream id, the batch or the transaction as a whole.
    pub event: Option<usize>,
    /// The size or count found.
    pub actual: usize,
    /// The limit's value.
    pub max: usize,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            stream,
            limit,
            event,
            actual,
            max,
        } = self;
        let (subject, unit) = (limit.subject(), limit.unit());
        match event {
            Some(index) => write!(f, "the {subject} of event #{} for {stream} is", index + 1)?,
            None if *limit == Limit::StreamIdBytes => write!(f, "the stream id {} is", Abbreviated(stream))?,
            None if *limit == Limit::TransactionEvents => {
                write!(f, "the transaction appending to {stream} would hold")?;
            }
            None => write!(f, "the {subject} appended to {stream} is")?,
        }
        write!(
            f,
            " {actual} {unit}, over the limit of {max} ({limit}); nothing of the batch was written"
        )
    }
}

/// A stream id as a message shows one that is too long: its first 80 characters (the id may be
/// megabytes of user input); the message then says how long it is.
struct Abbreviated<'a>(&'a StreamId);

impl fmt::Display for Abbreviated<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 80;
        let whole = self.0.to_string();
        match whole.char_indices().nth(SHOWN) {
            Some((cut, _)) => write!(f, "{}…", &whole[..cut]),
            None => f.write_str(&whole),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_id_too_long_is_shown_abbreviated() {
        let id = "é".repeat(5000);
        let error = LimitExceeded {
            stream: StreamId::new("order", id),
            limit: Limit::StreamIdBytes,
            event: None,
            actual: 10_005,
            max: 1024,
        };
        let message = error.to_string();
        let shown = format!("the stream id order/{}… is 10005 bytes of type and id", "é".repeat(74));
        assert!(message.starts_with(&shown), "{message}");
        assert!(message.len() < 300, "{message}");
    }

    #[test]
    fn messages_say_what_is_over_which_limit() {
        let stream = StreamId::new("order", "O-1");
        let exceeded = |limit, event| LimitExceeded {
            stream: stream.clone(),
            limit,
            event,
            actual: 11,
            max: 10,
        };
        let messages = [
            (
                exceeded(Limit::MetadataBytes, Some(2)),
                "the metadata of event #3 for order/O-1 is 11 bytes",
            ),
            (
                exceeded(Limit::BatchEvents, None),
                "the batch appended to order/O-1 is 11 events",
            ),
            (
                exceeded(Limit::StreamIdBytes, None),
                "the stream id order/O-1 is 11 bytes of type and id",
            ),
            (
                exceeded(Limit::TransactionEvents, None),
                "the transaction appending to order/O-1 would hold 11 events",
            ),
        ];
        for (error, start) in messages {
            let message = error.to_string();
            assert!(message.starts_with(start), "{message}");
            assert!(message.ends_with(&format!(
                "over the limit of 10 ({}); nothing of the batch was written",
                error.limit
            )));
        }
    }
}
