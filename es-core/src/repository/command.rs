//! Commands: decide on the loaded state, append with the loaded version, retry what is worth
//! retrying, and recognise a command that was already carried out.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use futures_util::TryStreamExt;
use tracing::Instrument;
use uuid::Uuid;

use super::{AsOf, CommandError, Repository, RepositoryError, Versioned};
use crate::aggregate::Aggregate;
use crate::metadata::Metadata;
use crate::record::{command_event_id, decode_record_all, encode_batch};
use crate::store::{AppendOutcome, EventStore, ExpectedVersion, RecordedEvent, StoreError, StreamId, StreamSlice};

/// What a command's decision returns: the new events, or a refusal.
///
/// Implemented for `Vec<Event>` (a command that cannot be refused) and for
/// `Result<Vec<Event>, E>` (one that can, with the error `E`), so
/// [`Repository::execute`] takes either without ceremony.
pub trait Decision<Event> {
    /// Why the command was refused; [`Infallible`] when it cannot be.
    type Error;

    /// The events, or the refusal.
    fn into_events(self) -> Result<Vec<Event>, Self::Error>;
}

impl<Event> Decision<Event> for Vec<Event> {
    type Error = Infallible;

    fn into_events(self) -> Result<Vec<Event>, Infallible> {
        Ok(self)
    }
}

impl<Event, E> Decision<Event> for Result<Vec<Event>, E> {
    type Error = E;

    fn into_events(self) -> Result<Vec<Event>, E> {
        self
    }
}

/// The future an asynchronous decision returns (see [`Repository::execute_async`]): boxed, so
/// it may borrow the state it decides on and still be `Send`.
pub type DecideFuture<'a, D> = Pin<Box<dyn Future<Output = D> + Send + 'a>>;

/// One event a command appended: its id and where it was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppendedEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// Its version in the aggregate's stream.
    pub version: u64,
    /// Its position in the store's global order.
    pub position: u64,
}

impl AppendedEvent {
    /// The events of a batch with ids `ids`, as `outcome` placed them.
    pub(super) fn of(ids: &[Uuid], outcome: &AppendOutcome) -> Vec<Self> {
        ids.iter()
            .zip(outcome.previous_version + 1..)
            .zip(&outcome.positions)
            .map(|((&event_id, version), &position)| Self {
                event_id,
                version,
                position,
            })
            .collect()
    }
}

impl From<&RecordedEvent> for AppendedEvent {
    fn from(event: &RecordedEvent) -> Self {
        Self {
            event_id: event.event_id,
            version: event.version,
            position: event.position,
        }
    }
}

/// The result of a command that was accepted.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Executed<A: Aggregate> {
    /// The state after the command's events.
    pub aggregate: A,
    /// The stream version after the command's events.
    pub version: u64,
    /// The events the command produced (possibly none). For a command
    /// [`already_stored`](Self::already_stored), what its stored events stand for now: a `#[replaced]` rule
    /// deployed since may read one stored event as several events, or none.
    pub events: Vec<A::Event>,
    /// Where each stored event of the command is, in order: one per event the command
    /// produced, or for a command [`already_stored`](Self::already_stored), one per event it
    /// stored.
    pub appended: Vec<AppendedEvent>,
    /// The command's id (its idempotency key): the one given in the metadata, or a new one.
    pub command_id: Uuid,
    /// Whether the command had already been carried out by an earlier send with the same command
    /// id: nothing was written this time, and the fields above describe the original outcome.
    pub already_stored: bool,
    /// The attempts of the [`RetryPolicy`](crate::RetryPolicy) the command took: 1 plus the
    /// number of retries after a conflict or an outage. A first decision on a guess the stream
    /// had moved past (a state from [`Repository::with_cache`], or the new aggregate
    /// [`Repository::create`] assumes) is decided again at once on the stored state, within the
    /// same attempt.
    pub attempts: u32,
}

impl<A: Aggregate> Executed<A> {
    /// The global position of the last event the command wrote (0 when it wrote none): wait
    /// for it with [`ProjectionProgress::wait_for`](crate::ProjectionProgress::wait_for) to
    /// read the command's writes from a read model.
    pub fn position(&self) -> u64 {
        self.appended.iter().map(|event| event.position).max().unwrap_or(0)
    }
}

/// Where a command's first attempt gets its state.
#[derive(Debug, Clone, Copy)]
pub(super) enum FirstAttempt {
    /// From the cache, else the store.
    Load,
    /// A new aggregate: `A::default()` at version 0, without reading.
    AssumeNew,
}

/// A decision as the retry loop calls it: the synchronous kind answers at once, the
/// asynchronous kind with a boxed future.
pub(super) trait Decider<A: Aggregate> {
    type Decision: Decision<A::Event>;

    fn decide<'a>(&'a mut self, state: &'a A) -> Decided<'a, Self::Decision>;
}

pub(super) enum Decided<'a, D> {
    Ready(D),
    Pending(DecideFuture<'a, D>),
}

/// A synchronous decision: `FnMut(&A) -> D`.
pub(super) struct Sync<F>(pub(super) F);

impl<A, F, D> Decider<A> for Sync<F>
where
    A: Aggregate,
    F: FnMut(&A) -> D,
    D: Decision<A::Event>,
{
    type Decision = D;

    fn decide<'a>(&'a mut self, state: &'a A) -> Decided<'a, D> {
        Decided::Ready((self.0)(state))
    }
}

/// An asynchronous decision: `FnMut(&A) -> DecideFuture<D>`.
pub(super) struct Async<F>(pub(super) F);

impl<A, F, D> Decider<A> for Async<F>
where
    A: Aggregate,
    F: for<'a> FnMut(&'a A) -> DecideFuture<'a, D>,
    D: Decision<A::Event>,
{
    type Decision = D;

    fn decide<'a>(&'a mut self, state: &'a A) -> Decided<'a, D> {
        Decided::Pending((self.0)(state))
    }
}

/// A command being carried out: what stays the same across its attempts, and how far it got.
struct Command {
    stream: StreamId,
    /// The events' metadata, command id filled in.
    metadata: Metadata,
    command_id: Uuid,
    first: FirstAttempt,
    /// Whether the next attempt may decide on the state `first` says (a cached state, or a
    /// new aggregate) rather than the stored one: until such a guess met a conflict.
    guessing: bool,
    /// The attempts made so far, this one included.
    attempts: u32,
    /// Whether the command's events may already be stored: its id came from the caller, or an
    /// attempt met an outage after which its append may have committed.
    maybe_stored: bool,
}

/// Why an attempt did not end the command.
enum Retry<E> {
    /// Another writer appended first.
    Conflict(crate::store::ConcurrencyConflict),
    /// The state decided on was a guess (cached, or assumed new) that the stream had moved
    /// past: not a race, and no attempt of the retry policy's.
    StaleGuess(crate::store::ConcurrencyConflict),
    /// The store had an outage; the append may have committed.
    Outage(StoreError),
    /// Not worth another attempt.
    Final(CommandError<E>),
}

impl<E> From<RepositoryError> for Retry<E> {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::Conflict(conflict) => Self::Conflict(conflict),
            RepositoryError::Store(error) if error.is_transient() => Self::Outage(error),
            other => Self::Final(CommandError::Repository(other)),
        }
    }
}

/// The metadata of a command's events: a command id (the given one or a new one), used as the
/// causation and correlation id unless those are given.
pub(super) fn command_metadata(mut metadata: Metadata) -> (Metadata, Uuid) {
    let command_id = *metadata.command_id.get_or_insert_with(Uuid::now_v7);
    metadata.causation_id.get_or_insert(command_id);
    metadata.correlation_id.get_or_insert(command_id);
    (metadata, command_id)
}

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    S: EventStore,
{
    pub(super) async fn run_command<D: Decider<A>>(
        &self,
        stream: StreamId,
        metadata: Metadata,
        mut decider: D,
        first: FirstAttempt,
    ) -> Result<Executed<A>, CommandError<<D::Decision as Decision<A::Event>>::Error>> {
        // A command id the caller chose may have been carried out by an earlier request.
        let maybe_stored = metadata.command_id.is_some();
        let (metadata, command_id) = command_metadata(metadata);
        // The span a trace follows from the command to every read model its events change:
        // projections' event spans carry the same correlation id.
        let span = tracing::info_span!(
            "execute",
            aggregate_type = %stream.aggregate_type,
            aggregate_id = %stream.aggregate_id,
            command_id = %command_id,
            correlation_id = metadata.correlation_id.map(tracing::field::display),
        );
        let mut command = Command {
            stream,
            metadata,
            command_id,
            first,
            guessing: true,
            attempts: 0,
            maybe_stored,
        };
        let started = Instant::now();
        loop {
            command.attempts += 1;
            let error = match self.attempt(&command, &mut decider).instrument(span.clone()).await {
                Ok(executed) => return Ok(executed),
                Err(Retry::Final(error)) => return Err(error),
                Err(Retry::StaleGuess(_)) => {
                    // Decided again at once on the stored state, within the same attempt: a
                    // stale cache entry costs a round trip, never a retry of the caller's.
                    command.guessing = false;
                    command.attempts -= 1;
                    continue;
                }
                Err(retry) => retry,
            };
            let (stream, attempts) = (&command.stream, command.attempts);
            let Some(wait) = self.retry.next_backoff(attempts, started.elapsed()) else {
                return Err(match error {
                    Retry::Conflict(conflict) | Retry::StaleGuess(conflict) => {
                        CommandError::Conflict { attempts, conflict }
                    }
                    Retry::Outage(error) => error.into(),
                    Retry::Final(error) => error,
                });
            };
            match &error {
                Retry::Conflict(_) => {
                    tracing::debug!(stream = %stream, attempts, "concurrency conflict; deciding again")
                }
                Retry::Outage(error) => {
                    tracing::debug!(stream = %stream, attempts, %error, "store unavailable; trying again");
                    // The append may have committed before the answer was lost: the next
                    // attempt must look for the command's events.
                    command.maybe_stored = true;
                }
                Retry::Final(_) | Retry::StaleGuess(_) => {}
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: load (or take from the cache), decide, append.
    async fn attempt<D: Decider<A>>(
        &self,
        command: &Command,
        decider: &mut D,
    ) -> Result<Executed<A>, Retry<<D::Decision as Decision<A::Event>>::Error>> {
        let Command {
            stream,
            metadata,
            command_id,
            first,
            guessing,
            attempts,
            maybe_stored,
        } = command;
        let (command_id, attempts) = (*command_id, *attempts);
        let guess = match (guessing, first) {
            (true, FirstAttempt::AssumeNew) => Some(Versioned {
                aggregate: A::default(),
                version: 0,
            }),
            (true, FirstAttempt::Load) => self.cache.as_ref().and_then(|cache| cache.take(stream)),
            (false, _) => None,
        };
        let guessed = guess.is_some();
        let current = match guess {
            Some(guess) => guess,
            None => self.rehydrate(stream, AsOf::Latest).await?,
        };
        let decision = match decider.decide(&current.aggregate) {
            Decided::Ready(decision) => decision,
            Decided::Pending(future) => future.await,
        };
        let events = match decision.into_events() {
            Ok(events) if !events.is_empty() => events,
            decided => {
                if *maybe_stored {
                    if let Some(executed) = self.stored_command(stream, command_id, attempts).await? {
                        return Ok(executed);
                    }
                }
                // A closed stream says so before any answer from its state. Asked only here, on
                // the way out without an append: an append to a closed stream is refused anyway.
                if let Some(closed) = self.store.stream_closure(stream).await.map_err(RepositoryError::from)? {
                    return Err(Retry::Final(RepositoryError::StreamClosed(Box::new(closed)).into()));
                }
                return self
                    .unchanged(stream, current, decided, command_id, attempts)
                    .map_err(Retry::Final);
            }
        };
        let Versioned { mut aggregate, version } = current;
        let batch = encode_batch(stream, &events, metadata).map_err(RepositoryError::from)?;
        let ids: Vec<Uuid> = batch.iter().map(|event| event.event_id).collect();
        let append_span = tracing::debug_span!("append", %stream, expected = version, events = batch.len());
        let appending = self.store.append(stream, ExpectedVersion::Exact(version), batch);
        let outcome = match appending.instrument(append_span).await {
            Ok(outcome) if !outcome.already_stored => outcome,
            Ok(_) | Err(StoreError::DuplicateEventId { .. }) => {
                // Our ids are stored: an earlier attempt (or send) of this command committed.
                return match self.stored_command(stream, command_id, attempts).await? {
                    Some(executed) => Ok(executed),
                    None => Err(Retry::Final(
                        RepositoryError::Store(StoreError::DuplicateEventId {
                            stream: stream.clone(),
                            event_id: command_event_id(command_id, stream, 0),
                        })
                        .into(),
                    )),
                };
            }
            Err(StoreError::Conflict(conflict)) if guessed => return Err(Retry::StaleGuess(conflict)),
            Err(error) => return Err(RepositoryError::from(error).into()),
        };
        for event in &events {
            aggregate.apply_event(event);
        }
        self.after_append(stream, &aggregate, outcome.previous_version, outcome.new_version)
            .await;
        let appended = AppendedEvent::of(&ids, &outcome);
        Ok(Executed {
            aggregate,
            version: outcome.new_version,
            events,
            appended,
            command_id,
            already_stored: false,
            attempts,
        })
    }

    /// A command refused, or one with nothing to do: the state is unchanged and stays good to
    /// cache.
    fn unchanged<E>(
        &self,
        stream: &StreamId,
        current: Versioned<A>,
        decided: Result<Vec<A::Event>, E>,
        command_id: Uuid,
        attempts: u32,
    ) -> Result<Executed<A>, CommandError<E>> {
        let Versioned { aggregate, version } = current;
        let cache = self.cache.as_ref().filter(|_| version > 0);
        match decided {
            Err(error) => {
                if let Some(cache) = cache {
                    cache.put(stream, Versioned { aggregate, version });
                }
                Err(CommandError::Rejected(error))
            }
            Ok(events) => {
                if let Some(cache) = cache {
                    cache.put_copy(stream, &aggregate, version);
                }
                Ok(Executed {
                    aggregate,
                    version,
                    events,
                    appended: Vec::new(),
                    command_id,
                    already_stored: false,
                    attempts,
                })
            }
        }
    }

    /// The outcome of command `command_id` on `stream` if its events are stored: the events
    /// with the ids [`command_event_id`] derives, from the first on, and the state right after
    /// them.
    pub(super) async fn stored_command(
        &self,
        stream: &StreamId,
        command_id: Uuid,
        attempts: u32,
    ) -> Result<Option<Executed<A>>, RepositoryError> {
        let Some(first) = self.store.read_event(command_event_id(command_id, stream, 0)).await? else {
            return Ok(None);
        };
        if first.stream != *stream {
            return Ok(None);
        }
        let mut records = self.store.read_stream(stream, StreamSlice::from_version(first.version));
        let mut events = Vec::new();
        let mut appended = Vec::new();
        while let Some(record) = records.try_next().await? {
            if record.event_id != command_event_id(command_id, stream, appended.len()) {
                break;
            }
            // What the stored event stands for now: a `#[replaced]` rule deployed since may make
            // it several events, or none.
            events.extend(decode_record_all::<A::Event>(&record)?);
            appended.push(AppendedEvent::from(&record));
        }
        drop(records);
        let version = first.version.saturating_sub(1) + appended.len() as u64;
        let state = self.rehydrate(stream, AsOf::Version(version)).await?;
        Ok(Some(Executed {
            aggregate: state.aggregate,
            version,
            events,
            appended,
            command_id,
            already_stored: true,
            attempts,
        }))
    }
}
