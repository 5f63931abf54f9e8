//! The checker: what a history promises against what the store holds, read back through its
//! public API (`read_stream`, `read_all`, `read_event`).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use es_core::{EventStore, GlobalLog, RecordedEvent, StoreError, StreamId, StreamSlice};
use futures_util::TryStreamExt;
use uuid::Uuid;

use super::{Attempt, History, Outcome};

/// How long the checker waits for `read_all` to show every event the streams hold: on
/// PostgreSQL, another session's open transaction holds `read_all` back (never loses events).
const LOG_WAIT: Duration = Duration::from_secs(60);

/// `read_all`'s page size while checking.
const PAGE: usize = 1000;

/// How many times the checker reads the store before it takes a read during which streams
/// changed, and how long it waits between reads.
const SETTLE_TRIES: u32 = 50;
const SETTLE_PAUSE: Duration = Duration::from_millis(100);

/// Violations listed in full; the rest are only counted.
const LISTED: usize = 20;

/// What [`History::check`] found: counts, and a description of every violation.
///
/// Counts of events are of distinct event ids. A clean report (see [`Report::is_clean`]) has no
/// lost, duplicated, partial, misplaced, phantom or failed-but-stored event, no gap and no
/// disorder, and every read model compared equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Append attempts recorded (a batch sent again counts again).
    pub appends: u64,
    /// Distinct batches attempted.
    pub batches: u64,
    /// Distinct events attempted.
    pub events: u64,
    /// Attempts answered with a concurrency conflict.
    pub conflicts: u64,
    /// Attempts answered with another refusal.
    pub failures: u64,
    /// Attempts whose outcome is unknown: an error that does not say whether the batch was
    /// written (an answer lost on the wire, an outage, a writer killed before it heard).
    pub unknown_answers: u64,
    /// Events of acknowledged batches.
    pub acknowledged: u64,
    /// Events of the history's streams found in the store.
    pub stored: u64,
    /// Acknowledged events not stored.
    pub lost: u64,
    /// Extra copies of stored events (by id, in a stream or in the global log).
    pub duplicated: u64,
    /// Batches stored in part, or not together at consecutive versions of their stream.
    pub partial_batches: u64,
    /// Events of refused batches (conflict or failure, no lost answer after) that are stored.
    pub failed_stored: u64,
    /// Batches whose only answers were lost, found stored whole.
    pub unknown_stored: u64,
    /// Batches whose only answers were lost, found not stored at all.
    pub unknown_not_stored: u64,
    /// Streams whose versions are not 1..n.
    pub gaps: u64,
    /// Events whose place differs between the answer, the stream, the global log and
    /// `read_event`, or that one of them lacks.
    pub misplaced: u64,
    /// Places where the global log's positions do not increase.
    pub out_of_order: u64,
    /// Stored events no attempt names.
    pub phantom: u64,
    /// Read models compared with a rebuild ([`Report::compare_model`]).
    pub models_checked: u64,
    /// Read models that differ from their rebuild.
    pub models_differing: u64,
    /// What was wrong, one line each (the first few).
    pub violations: Vec<String>,
    /// Violations beyond those listed.
    pub unlisted: u64,
}

impl Report {
    /// Whether the history holds: nothing lost, duplicated, half-written, misplaced or made up.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// Panics with the report and its violations unless it [is clean](Report::is_clean).
    pub fn assert_clean(&self) {
        if !self.is_clean() {
            panic!(
                "the history does not hold: {self}\n{}{}",
                self.violations.join("\n"),
                match self.unlisted {
                    0 => String::new(),
                    n => format!("\n... and {n} more"),
                }
            );
        }
    }

    /// Compares a read model with the same projection rebuilt from scratch; a difference is a
    /// violation.
    pub fn compare_model<T: PartialEq + fmt::Debug>(&mut self, name: &str, live: &T, rebuilt: &T) {
        self.models_checked += 1;
        if live != rebuilt {
            self.models_differing += 1;
            let (live, rebuilt) = (format!("{live:?}"), format!("{rebuilt:?}"));
            let cut = |text: &str| text.chars().take(300).collect::<String>();
            self.violate(format!(
                "read model {name} differs from a rebuild: live {} vs rebuilt {}",
                cut(&live),
                cut(&rebuilt)
            ));
        }
    }

    fn violate(&mut self, violation: String) {
        if self.violations.len() < LISTED {
            self.violations.push(violation);
        } else {
            self.unlisted += 1;
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} appends ({} conflicts, {} refused, {} unknown outcomes) of {} batches, {} events: {} acknowledged, \
             {} stored, {} lost, {} duplicated, {} partial batches, {} refused but stored, batches left unknown \
             resolved by reading: {} stored whole / {} not at all, {} gaps, {} misplaced, {} out of order, {} phantom",
            self.appends,
            self.conflicts,
            self.failures,
            self.unknown_answers,
            self.batches,
            self.events,
            self.acknowledged,
            self.stored,
            self.lost,
            self.duplicated,
            self.partial_batches,
            self.failed_stored,
            self.unknown_stored,
            self.unknown_not_stored,
            self.gaps,
            self.misplaced,
            self.out_of_order,
            self.phantom
        )?;
        if self.models_checked > 0 {
            write!(
                f,
                "; {} of {} read models equal a rebuild",
                self.models_checked - self.models_differing,
                self.models_checked
            )?;
        }
        Ok(())
    }
}

/// What the attempts of one batch say, all together.
#[derive(Debug, Default)]
struct Verdict {
    stream: Option<StreamId>,
    /// The answers of acknowledging attempts: first version and positions.
    acks: Vec<(u64, Vec<u64>)>,
    /// Whether the last attempt that was answered at all was refused (nothing written), and no
    /// attempt after it lost its answer.
    refused: bool,
}

impl History {
    /// Reads the store back and checks the history against it (see [`Report`]): every
    /// acknowledged event stored once, where its answer said; no event of a refused append
    /// stored; lost answers resolved by reading, each batch stored whole or not at all; every
    /// stream's versions 1..n; the global log holding each event once, in position order.
    ///
    /// Call it once the writers have stopped. A write may still be in flight at the server even
    /// then (the last append of a writer process just killed, which the server carries out and
    /// commits all the same): the streams and the log are read again until no stream's version
    /// changed while they were read. The store's own failures are returned as they are; the
    /// history's violations are in the report.
    pub async fn check<S: EventStore + GlobalLog + ?Sized>(&self, store: &S) -> Result<Report, StoreError> {
        let attempts = self.attempts();
        let streams: BTreeSet<StreamId> = attempts.iter().map(|attempt| attempt.batch.stream.clone()).collect();
        let mut tries = 0;
        let (mut report, in_streams, in_log) = loop {
            let mut report = Report::default();
            let before = versions(store, &streams).await?;
            let in_streams = read_streams(store, &streams, &mut report).await?;
            let in_log = read_log(store, &streams, in_streams.len(), &mut report).await?;
            tries += 1;
            if versions(store, &streams).await? == before || tries == SETTLE_TRIES {
                break (report, in_streams, in_log);
            }
            tokio::time::sleep(SETTLE_PAUSE).await;
        };
        report.appends = attempts.len() as u64;
        let (batches, order) = verdicts(&attempts, &mut report);
        compare_reads(&in_streams, &in_log, &order, &mut report);
        report.stored = in_streams.len() as u64;
        for ids in &order {
            check_batch(store, ids, &batches[ids], &in_streams, &mut report).await?;
        }
        Ok(report)
    }
}

/// The sum of the streams' versions: it changes when anything is appended to them.
async fn versions<S: EventStore + ?Sized>(store: &S, streams: &BTreeSet<StreamId>) -> Result<u64, StoreError> {
    let mut sum = 0;
    for stream in streams {
        sum += store.stream_version(stream).await?;
    }
    Ok(sum)
}

/// Groups the attempts by batch (in the order batches first appear) and counts their answers.
fn verdicts(attempts: &[Attempt], report: &mut Report) -> (HashMap<Vec<Uuid>, Verdict>, Vec<Vec<Uuid>>) {
    let mut batches: HashMap<Vec<Uuid>, Verdict> = HashMap::new();
    let mut order = Vec::new();
    let mut owner: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for attempt in attempts {
        let ids = &attempt.batch.event_ids;
        let verdict = batches.entry(ids.clone()).or_insert_with(|| {
            order.push(ids.clone());
            Verdict::default()
        });
        if verdict.stream.get_or_insert_with(|| attempt.batch.stream.clone()) != &attempt.batch.stream {
            report.violate(format!("the history sends batch {ids:?} to two streams"));
        }
        match &attempt.outcome {
            Outcome::Ok {
                first_version,
                positions,
            } => verdict.acks.push((*first_version, positions.clone())),
            Outcome::Conflict => {
                report.conflicts += 1;
                verdict.refused = true;
            }
            Outcome::Failed(_) => {
                report.failures += 1;
                verdict.refused = true;
            }
            Outcome::Unknown(_) => {
                report.unknown_answers += 1;
                verdict.refused = false;
            }
        }
        for id in ids {
            let first = owner.entry(*id).or_insert_with(|| ids.clone());
            if first != ids {
                report.violate(format!("the history puts event {id} in two different batches"));
            }
        }
    }
    report.batches = order.len() as u64;
    report.events = owner.len() as u64;
    (batches, order)
}

/// Every event of `streams`, by id, read with `read_stream`; checks versions are 1..n.
async fn read_streams<S: EventStore + ?Sized>(
    store: &S,
    streams: &BTreeSet<StreamId>,
    report: &mut Report,
) -> Result<HashMap<Uuid, RecordedEvent>, StoreError> {
    let mut by_id = HashMap::new();
    for stream in streams {
        let events: Vec<RecordedEvent> = store.read_stream(stream, StreamSlice::all()).try_collect().await?;
        if let Some((at, event)) = events
            .iter()
            .enumerate()
            .find(|(at, event)| event.version != *at as u64 + 1)
        {
            report.gaps += 1;
            report.violate(format!(
                "stream {stream}: version {} where {} belongs",
                event.version,
                at + 1
            ));
        }
        for event in events {
            if event.stream != *stream {
                report.misplaced += 1;
                report.violate(format!(
                    "read_stream({stream}) returned event {} of {}",
                    event.event_id, event.stream
                ));
            }
            let id = event.event_id;
            if by_id.insert(id, event).is_some() {
                report.duplicated += 1;
                report.violate(format!("event {id} is stored twice in the streams"));
            }
        }
    }
    Ok(by_id)
}

/// Every event of `streams` in the global log, by id: pages through `read_all` from the start,
/// waiting (up to [`LOG_WAIT`]) until it shows as many as the streams hold; checks positions
/// increase, each id shows once, and no event of another stream is there.
async fn read_log<S: GlobalLog + ?Sized>(
    store: &S,
    streams: &BTreeSet<StreamId>,
    expected: usize,
    report: &mut Report,
) -> Result<HashMap<Uuid, RecordedEvent>, StoreError> {
    let deadline = Instant::now() + LOG_WAIT;
    let mut by_id: HashMap<Uuid, RecordedEvent> = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, PAGE).await?;
        if page.is_empty() {
            if by_id.len() >= expected || Instant::now() > deadline {
                return Ok(by_id);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        for event in page {
            if event.position <= after {
                report.out_of_order += 1;
                report.violate(format!("read_all returned position {} after {after}", event.position));
            }
            after = after.max(event.position);
            if !streams.contains(&event.stream) {
                report.phantom += 1;
                report.violate(format!(
                    "event {} of stream {} is stored, and no attempt wrote to that stream",
                    event.event_id, event.stream
                ));
                continue;
            }
            let id = event.event_id;
            if by_id.insert(id, event).is_some() {
                report.duplicated += 1;
                report.violate(format!("event {id} shows twice in the global log"));
            }
        }
    }
}

/// The streams and the log must hold the same events at the same places, all attempted.
fn compare_reads(
    in_streams: &HashMap<Uuid, RecordedEvent>,
    in_log: &HashMap<Uuid, RecordedEvent>,
    order: &[Vec<Uuid>],
    report: &mut Report,
) {
    for (id, event) in in_streams {
        match in_log.get(id) {
            Some(logged) if logged == event => {}
            Some(logged) => {
                report.misplaced += 1;
                report.violate(format!(
                    "event {id}: read_stream has {}@{} (position {}), read_all {}@{} (position {})",
                    event.stream, event.version, event.position, logged.stream, logged.version, logged.position
                ));
            }
            None => {
                report.misplaced += 1;
                report.violate(format!(
                    "event {id} of {} is in its stream but not in read_all",
                    event.stream
                ));
            }
        }
    }
    for (id, event) in in_log {
        if !in_streams.contains_key(id) {
            report.misplaced += 1;
            report.violate(format!(
                "event {id} is in read_all but not in its stream {}",
                event.stream
            ));
        }
    }
    let attempted: std::collections::HashSet<&Uuid> = order.iter().flatten().collect();
    for (id, event) in in_streams {
        if !attempted.contains(id) {
            report.phantom += 1;
            report.violate(format!("event {id} in {} was never attempted", event.stream));
        }
    }
}

/// One batch: stored whole or not at all, where its answers said, never when it was refused.
async fn check_batch<S: EventStore + ?Sized>(
    store: &S,
    ids: &[Uuid],
    verdict: &Verdict,
    in_streams: &HashMap<Uuid, RecordedEvent>,
    report: &mut Report,
) -> Result<(), StoreError> {
    let acked = !verdict.acks.is_empty();
    let stored: Vec<&RecordedEvent> = ids.iter().filter_map(|id| in_streams.get(id)).collect();
    if acked {
        report.acknowledged += ids.len() as u64;
    }
    // What the streams lack, read_event must lack too: every id of a batch found in part, the
    // first and last of one not found at all (a batch is stored whole or not at all).
    let missing: Vec<&Uuid> = ids.iter().filter(|id| !in_streams.contains_key(id)).collect();
    let asked: Vec<&Uuid> = match missing.len() == ids.len() {
        true => missing.first().into_iter().chain(missing.last()).copied().collect(),
        false => missing,
    };
    for id in asked {
        if let Some(found) = store.read_event(*id).await? {
            report.misplaced += 1;
            report.violate(format!(
                "read_event finds event {id} at {}@{}, which its stream does not hold",
                found.stream, found.version
            ));
        }
    }
    let Some(stream) = &verdict.stream else { return Ok(()) };
    if stored.is_empty() {
        if acked {
            report.lost += ids.len() as u64;
            report.violate(format!("acknowledged batch {ids:?} of {stream} is not stored"));
        } else if !verdict.refused {
            report.unknown_not_stored += 1;
        }
        return Ok(());
    }
    if stored.len() < ids.len() {
        report.partial_batches += 1;
        if acked {
            report.lost += (ids.len() - stored.len()) as u64;
        }
        report.violate(format!(
            "batch {ids:?} of {stream}: {} of its {} events are stored",
            stored.len(),
            ids.len()
        ));
        return Ok(());
    }
    let first = stored[0].version;
    let together = stored
        .iter()
        .zip(first..)
        .all(|(event, version)| event.stream == *stream && event.version == version)
        && stored.windows(2).all(|pair| pair[0].position < pair[1].position);
    if !together {
        report.partial_batches += 1;
        report.violate(format!(
            "batch {ids:?} of {stream} is not stored together, in batch order"
        ));
    }
    let positions: Vec<u64> = stored.iter().map(|event| event.position).collect();
    for (first_version, acked_positions) in &verdict.acks {
        if (*first_version, acked_positions) != (first, &positions) {
            report.misplaced += ids.len() as u64;
            report.violate(format!(
                "batch of {stream} acknowledged at version {first_version}, positions {acked_positions:?}; \
                 stored at version {first}, positions {positions:?}"
            ));
        }
    }
    if !acked {
        if verdict.refused {
            report.failed_stored += ids.len() as u64;
            report.violate(format!("batch {ids:?} of {stream} was refused, and is stored"));
        } else {
            report.unknown_stored += 1;
        }
    }
    Ok(())
}
