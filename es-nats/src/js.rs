//! The few JetStream requests the store makes, with their errors mapped to [`NatsError`]: reads
//! by subject or sequence (always answered by the stream's leader, so a read follows every
//! acknowledged write) and publishes conditioned on a subject's last sequence.

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, RawMessageErrorKind, Stream};
use async_nats::jetstream::{self, Context};
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::error::{transient_code, NatsError};

/// The header of a message that holds the stream version of its batch's last event.
pub(crate) const VERSION_HEADER: &str = "Es-Version";

/// The message of `stream` with sequence `sequence`, `None` if there is none.
pub(crate) async fn message_at(
    stream: &Stream,
    sequence: u64,
    operation: &'static str,
) -> Result<Option<StreamMessage>, NatsError> {
    raw_result(stream.get_raw_message(sequence).await, operation)
}

/// The first message of `stream` at or after `sequence` whose subject matches `filter`
/// (wildcards allowed), `None` if there is none.
pub(crate) async fn first_from(
    stream: &Stream,
    filter: &str,
    sequence: u64,
    operation: &'static str,
) -> Result<Option<StreamMessage>, NatsError> {
    raw_result(
        stream.get_first_raw_message_by_subject(filter, sequence.max(1)).await,
        operation,
    )
}

/// The last message of `stream` on `subject`, `None` if there is none.
pub(crate) async fn last_on(
    stream: &Stream,
    subject: &str,
    operation: &'static str,
) -> Result<Option<StreamMessage>, NatsError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(Some(message)),
        Err(error) => match error.kind() {
            LastRawMessageErrorKind::NoMessageFound => Ok(None),
            LastRawMessageErrorKind::JetStream(api) => {
                let transient = transient_code(api.error_code());
                Err(NatsError::request(operation, error, transient))
            }
            LastRawMessageErrorKind::InvalidSubject => Err(NatsError::request(operation, error, false)),
            // Timed out, no responder (no leader yet), connection cut.
            _ => Err(NatsError::request(operation, error, true)),
        },
    }
}

fn raw_result(
    result: Result<StreamMessage, async_nats::jetstream::stream::RawMessageError>,
    operation: &'static str,
) -> Result<Option<StreamMessage>, NatsError> {
    match result {
        Ok(message) => Ok(Some(message)),
        Err(error) => match error.kind() {
            RawMessageErrorKind::NoMessageFound => Ok(None),
            RawMessageErrorKind::JetStream(api) => {
                let transient = transient_code(api.error_code());
                Err(NatsError::request(operation, error, transient))
            }
            RawMessageErrorKind::InvalidSubject => Err(NatsError::request(operation, error, false)),
            _ => Err(NatsError::request(operation, error, true)),
        },
    }
}

/// The last sequence of `stream` (0 when it has never held a message), from its leader's
/// state: what a publish conditioned with `Nats-Expected-Last-Sequence` is compared with.
pub(crate) async fn last_sequence(stream: &Stream, operation: &'static str) -> Result<u64, NatsError> {
    stream
        .get_info()
        .await
        .map(|info| info.state.last_sequence)
        .map_err(|error| NatsError::request(operation, error, true))
}

/// What the server said to a conditioned publish.
pub(crate) enum Published {
    /// Stored (or recognised as a duplicate of a stored message: see [`PublishAck::duplicate`]).
    Acked(PublishAck),
    /// Refused: the subject's last sequence was not the expected one.
    WrongLastSequence,
}

/// Publishes `payload` with `headers` on `subject` and waits for JetStream's acknowledgement.
pub(crate) async fn publish(
    context: &Context,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
    operation: &'static str,
) -> Result<Published, NatsError> {
    let sent = context
        .publish_with_headers(subject, headers, payload)
        .await
        .map_err(|error| publish_error(error, operation))?;
    match sent.await {
        Ok(ack) => Ok(Published::Acked(ack)),
        Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Ok(Published::WrongLastSequence),
        Err(error) => Err(publish_error(error, operation)),
    }
}

/// A failed publish: transient unless the server refused it for good.
fn publish_error(error: async_nats::jetstream::context::PublishError, operation: &'static str) -> NatsError {
    let transient = match error.kind() {
        // No responder: the stream has no leader right now (an election), or does not exist.
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => true,
        PublishErrorKind::Other => std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_some_and(|api| transient_code(api.error_code())),
        _ => false,
    };
    NatsError::request(operation, error, transient)
}

/// When JetStream stored `message`.
pub(crate) fn recorded_at(message: &StreamMessage) -> DateTime<Utc> {
    let nanos = message.time.unix_timestamp_nanos();
    let seconds = nanos.div_euclid(1_000_000_000);
    let rest = nanos.rem_euclid(1_000_000_000);
    i64::try_from(seconds)
        .ok()
        .and_then(|seconds| DateTime::from_timestamp(seconds, rest as u32))
        .unwrap_or_default()
}

/// The value of header `name` of `message` as a number.
pub(crate) fn number_header(message: &StreamMessage, name: &str) -> Result<u64, NatsError> {
    message
        .headers
        .get(name)
        .and_then(|value| value.as_str().parse().ok())
        .ok_or_else(|| {
            NatsError::Corrupt(format!(
                "message {} on {} has no number in header {name}",
                message.sequence, message.subject
            ))
        })
}

/// What a publish conditioned on a subject's last sequence did.
pub(crate) enum Cas {
    /// Stored.
    Stored,
    /// Refused: the subject is no longer at the expected sequence.
    Moved,
}

/// How long a write conditioned on a sequence that other writers keep moving goes on trying
/// before it gives up as unavailable.
const CONTENTION_BUDGET: Duration = Duration::from_secs(10);

/// The longest pause between two tries of such a write.
const CONTENTION_MAX_PAUSE: Duration = Duration::from_millis(32);

/// Paces the tries of a write conditioned on a whole stream's last sequence, which writers of
/// other subjects move too (see [`publish_if`]): after each lost try a random pause, growing
/// with the tries, so that the losers of one round do not meet again in the next; and a budget
/// of time rather than of tries, so that a busy partition slows a writer down instead of
/// failing it.
pub(crate) struct Contention {
    started: Instant,
    lost: u32,
}

impl Contention {
    /// Before the first try.
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            lost: 0,
        }
    }

    /// After a lost try: waits before the next one, or `false` once the budget is spent.
    pub(crate) async fn lost(&mut self) -> bool {
        if self.started.elapsed() >= CONTENTION_BUDGET {
            return false;
        }
        self.lost = self.lost.saturating_add(1);
        // The first loss tries again at once: usually one other writer got in, and is done.
        if self.lost > 1 {
            let ceiling = Duration::from_micros(250)
                .saturating_mul(1 << self.lost.min(8))
                .min(CONTENTION_MAX_PAUSE);
            tokio::time::sleep(ceiling.mul_f64(jitter())).await;
        }
        true
    }

    /// How many tries were lost, for the error once the budget is spent.
    pub(crate) fn losses(&self) -> u32 {
        self.lost
    }
}

/// A random fraction in `[0, 1)`, from the random bits of a UUID v4.
fn jitter() -> f64 {
    const MANTISSA: u32 = 53;
    let random = Uuid::new_v4().as_u128() as u64 & ((1 << MANTISSA) - 1);
    random as f64 / (1_u64 << MANTISSA) as f64
}

/// Publishes `payload` on `subject` of `stream` only if the subject's last sequence is
/// `expected` (0: no message yet). Conditioned on the whole stream's last sequence as well,
/// read before the subject's, which nats-server 2.9 checks exactly even for messages still in
/// flight in a cluster (its per-subject check alone is loose there); a refusal because another
/// subject moved is tried again.
pub(crate) async fn publish_if(
    context: &Context,
    stream: &Stream,
    subject: &str,
    expected: u64,
    payload: Bytes,
    operation: &'static str,
) -> Result<Cas, NatsError> {
    let mut contention = Contention::new();
    loop {
        let stream_last = last_sequence(stream, operation).await?;
        let subject_last = last_on(stream, subject, operation)
            .await?
            .map_or(0, |message| message.sequence);
        if subject_last != expected {
            return Ok(Cas::Moved);
        }
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", expected.to_string().as_str());
        headers.insert("Nats-Expected-Last-Sequence", stream_last.to_string().as_str());
        match publish(context, subject.to_owned(), headers, payload.clone(), operation).await? {
            Published::Acked(_) => return Ok(Cas::Stored),
            Published::WrongLastSequence if contention.lost().await => continue,
            Published::WrongLastSequence => return Err(contended(operation, "other keys", &contention)),
        }
    }
}

/// The error of a write that lost to writers of `rivals` (of the same JetStream stream) until
/// its budget was spent.
pub(crate) fn contended(operation: &'static str, rivals: &str, contention: &Contention) -> NatsError {
    NatsError::request(
        operation,
        format!(
            "writers of {rivals} got in first {} times in {} s",
            contention.losses(),
            CONTENTION_BUDGET.as_secs()
        ),
        true,
    )
}
