//! The commands that take long or concern projections: `projections`, `rebuild`, `doctor`,
//! with progress bars on a terminal and plain progress lines otherwise.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use es_core::{ClaimStatus, LogFilter, LoggedEvent, RebuildProgress, StoreError, StreamId};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::commands::time;
use crate::interrupt::Interrupt;
use crate::output::{Exit, Failure, Output};
use crate::rows::{self, Next, Row};
use crate::views::{ProjectionView, SnapshotCheck};
use crate::{Cli, CliStore};

/// Progress of a long command: a bar on a terminal, else a line to stderr at most once a
/// second (and at the first and last step), so logs stay readable.
struct Progress {
    bar: Option<ProgressBar>,
    what: String,
    last_line: Option<Instant>,
}

/// How often plain progress lines are printed.
const LINE_EVERY: Duration = Duration::from_secs(1);

impl Progress {
    fn new(what: &str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style =
                ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} events, {per_sec}, ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(what.to_owned());
            bar
        });
        Self {
            bar,
            what: what.to_owned(),
            last_line: None,
        }
    }

    fn update(&mut self, done: u64, total: u64, per_second: f64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total.max(done));
            bar.set_position(done);
            return;
        }
        let due = self.last_line.is_none_or(|last| last.elapsed() >= LINE_EVERY) || done >= total;
        if due {
            self.last_line = Some(Instant::now());
            let eta = if per_second > 0.0 && total > done {
                format!("{:.0}s", (total - done) as f64 / per_second)
            } else {
                "-".to_owned()
            };
            eprintln!(
                "{}: {done}/{total} events, {per_second:.0} events/s, ETA {eta}",
                self.what
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub(crate) fn find<'c, S: CliStore>(cli: &'c Cli<S>, name: &str) -> Result<&'c dyn ProjectionView, Failure> {
    cli.projections
        .iter()
        .map(|view| view.as_ref())
        .find(|view| view.name() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = cli.projections.iter().map(|view| view.name()).collect();
            Failure::new(
                Exit::NotFound,
                format!("no projection `{name}` is registered; registered: {}", known.join(", ")),
            )
        })
}

/// How long an interrupted rebuild waits to read back the checkpoint it left (see `rebuild`).
const FENCE_WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn rebuild<S: CliStore>(
    cli: &Cli<S>,
    out: &mut Output<'_>,
    err: &mut (dyn Write + Send),
    name: &str,
    interrupt: &mut Interrupt,
) -> Result<Exit, Failure> {
    let view = find(cli, name)?;
    // A rebuild claims the projection; with a runner holding it, it would wait indefinitely.
    if view.claim_status().await.map_err(Failure::store)? == ClaimStatus::Held {
        return Err(Failure::new(
            Exit::Busy,
            format!("projection `{name}` is held by a running runner: stop it, then rebuild"),
        ));
    }
    let mut progress = Progress::new(&format!("rebuild {name}"), 0);
    let started = Instant::now();
    let mut report = |step: RebuildProgress| progress.update(step.done, step.total, step.events_per_second);
    // Interrupting drops the rebuild mid-batch: that batch rolls back, the batches before it
    // stay committed with their checkpoint, and a runner (or another rebuild) goes on from there.
    let result = tokio::select! {
        result = view.rebuild(&mut report) => Some(result),
        () = interrupt.recv() => None,
    };
    progress.finish();
    let Some(result) = result else {
        // A store may be committing the batch in hand on a thread of its own, past the drop:
        // read back too soon, the checkpoint would be one batch behind. Claiming the projection
        // waits for that commit, or fences it out (its claim is gone), so what is read after it
        // is the checkpoint left. A second Ctrl-C, or a runner that took the projection over,
        // stops the wait.
        let fenced = tokio::select! {
            fenced = tokio::time::timeout(FENCE_WAIT, view.fence()) => matches!(fenced, Ok(Ok(()))),
            () = interrupt.recv() => false,
        };
        let lag = view.lag().await.map_err(Failure::store)?;
        let caveat = if fenced {
            ""
        } else {
            " (read without waiting for the batch in hand: `projections` shows where it is)"
        };
        let _ = writeln!(
            err,
            "rebuild {name} interrupted at position {} ({} events behind){caveat}; the read model and its \
             checkpoint agree: run `rebuild` again, or let a runner catch up",
            lag.checkpoint, lag.events_behind
        );
        return Ok(Exit::Interrupted);
    };
    let done = result.map_err(|error| Failure::new(Exit::Problems, error.to_string()))?;
    let seconds = started.elapsed().as_secs_f64();
    if out.json {
        out.json(&json!({
            "projection": name, "read": done.read, "handled": done.handled,
            "position": done.position, "seconds": seconds,
        }))?;
    } else {
        out.line(format!(
            "rebuilt {name}: {} events read, {} handled, checkpoint {}, in {seconds:.1} s",
            done.read, done.handled, done.position
        ))?;
    }
    Ok(Exit::Ok)
}

/// One stored row the current code cannot read.
struct Problem {
    kind: &'static str,
    stream: StreamId,
    version: u64,
    /// An event's place in the global log.
    position: Option<u64>,
    event_name: Option<String>,
    error: String,
}

impl Problem {
    fn json(&self) -> Value {
        json!({
            "kind": self.kind, "stream": self.stream.to_string(), "version": self.version,
            "position": self.position, "event_name": self.event_name, "error": self.error,
        })
    }

    fn line(&self) -> String {
        match &self.event_name {
            Some(name) => format!(
                "{} {} v{} ({name}): {}",
                self.kind, self.stream, self.version, self.error
            ),
            None => format!("{} {} v{}: {}", self.kind, self.stream, self.version, self.error),
        }
    }
}

/// The problem of a stored event the current code cannot decode, if it has one.
fn check_event<S: CliStore>(cli: &Cli<S>, event: &LoggedEvent<'_>) -> Option<Problem> {
    let checked = match cli.aggregates.get(event.aggregate_type) {
        Some(view) => view.check(event.event_name, event.schema_version, event.payload),
        None => Err(format!("no aggregate of type `{}` is registered", event.aggregate_type)),
    };
    checked.err().map(|error| Problem {
        kind: "event",
        stream: event.stream(),
        version: event.version,
        position: Some(event.position),
        event_name: Some(event.event_name.to_owned()),
        error,
    })
}

pub(crate) async fn doctor<S: CliStore>(
    cli: &Cli<S>,
    out: &mut Output<'_>,
    batch: usize,
    settle_wait: Duration,
) -> Result<Exit, Failure> {
    let batch = batch.max(1);
    let started = Instant::now();
    let total = cli.store.tail(0).await.map_err(Failure::store)?.events;
    let mut progress = Progress::new("doctor", total);
    let mut problems = Vec::new();
    let mut report = |problem: Problem, out: &mut Output<'_>| -> Result<(), Failure> {
        if !out.json {
            out.line(problem.line())?;
        }
        problems.push(problem);
        Ok(())
    };
    // One query lends every event (see `GlobalLog::replay_all`); the callback cannot wait, so
    // a failed write of a problem line stops the replay and is returned after it. A row that
    // cannot be read at all stops the replay too: the rows from the last one lent are then read
    // one at a time up to it, it is reported, and the replay goes on after it.
    let mut events = 0_u64;
    let mut failed = None;
    let mut after = 0_u64;
    let everything = LogFilter::all();
    // Counts a checked row, reporting its problem if it has one.
    let mut note = |problem: Option<Problem>, out: &mut Output<'_>| -> Result<(), Failure> {
        if let Some(problem) = problem {
            report(problem, out)?;
        }
        events += 1;
        if events.is_multiple_of(batch as u64) {
            let seconds = started.elapsed().as_secs_f64();
            progress.update(events, total.max(events), events as f64 / seconds.max(1e-9));
        }
        Ok(())
    };
    // Events committed past the log's settled head (PostgreSQL, while older transactions are
    // open anywhere in the cluster) are waited for a while, then reported as not checked:
    // never an all-clear over events not seen.
    let settle_by = Instant::now().checked_add(settle_wait).unwrap_or_else(Instant::now);
    let unchecked = 'settled: loop {
        'log: loop {
            let mut lent_to = after;
            let replayed = cli
                .store
                .replay_all(after, &everything, &mut |event| {
                    lent_to = event.position;
                    match note(check_event(cli, &event), out) {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(failure) => {
                            failed = Some(failure);
                            ControlFlow::Break(())
                        }
                    }
                })
                .await;
            if let Some(failure) = failed.take() {
                return Err(failure);
            }
            match replayed {
                Ok(_) => {
                    after = lent_to;
                    break;
                }
                Err(StoreError::Corrupt { .. }) => {}
                Err(error) => return Err(Failure::store(error)),
            }
            after = lent_to;
            loop {
                match rows::next_row(&cli.store, after, &everything)
                    .await
                    .map_err(Failure::store)?
                {
                    Next::Head => break 'log,
                    Next::LeftOut(position) => after = position,
                    Next::Row(row) => match *row {
                        Row::Event(event) => {
                            note(check_event(cli, &LoggedEvent::of(&event)), out)?;
                            after = event.position;
                        }
                        Row::Unreadable(row) => {
                            // `next_row` places an unreadable row past `after`; anything else would loop.
                            let Some(position) = row.position.filter(|position| *position > after) else {
                                return Err(Failure::store(StoreError::Corrupt {
                                    stream: row.stream,
                                    version: row.version,
                                    reason: row.reason,
                                }));
                            };
                            let error = row.message();
                            let problem = Problem {
                                kind: "event",
                                stream: row.stream,
                                version: row.version,
                                position: Some(position),
                                event_name: None,
                                error,
                            };
                            note(Some(problem), out)?;
                            after = position;
                            continue 'log;
                        }
                    },
                }
            }
        }
        let held_back = cli.store.unsettled(after).await.map_err(Failure::store)?;
        if held_back == 0 || Instant::now() >= settle_by {
            break 'settled held_back;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    };
    let held_back_by = holder(cli, unchecked).await;
    let seconds = started.elapsed().as_secs_f64();
    progress.update(events, total.max(events), events as f64 / seconds.max(1e-9));
    progress.finish();
    let (mut snapshots, mut stale, mut forgotten) = (0_u64, 0_u64, 0_u64);
    let mut after_stream: Option<StreamId> = None;
    loop {
        let page = cli
            .store
            .list_snapshots(after_stream.as_ref(), batch)
            .await
            .map_err(Failure::store)?;
        let Some(last) = page.last() else { break };
        after_stream = Some(last.stream.clone());
        for snapshot in &page {
            snapshots += 1;
            // Sealed for a subject forgotten since: nothing opens it, loads replay instead.
            if es_core::pii::is_sealed_state(&snapshot.state) {
                forgotten += 1;
                continue;
            }
            let error = match cli.aggregates.get(snapshot.stream.aggregate_type.as_str()) {
                None => Some(format!(
                    "no aggregate of type `{}` is registered",
                    snapshot.stream.aggregate_type
                )),
                Some(view) => match view.check_snapshot(snapshot) {
                    SnapshotCheck::Usable => None,
                    SnapshotCheck::Stale => {
                        stale += 1;
                        None
                    }
                    SnapshotCheck::Broken(error) => Some(format!("does not decode (loads replay instead): {error}")),
                },
            };
            if let Some(error) = error {
                let problem = Problem {
                    kind: "snapshot",
                    stream: snapshot.stream.clone(),
                    version: snapshot.version,
                    position: None,
                    event_name: None,
                    error,
                };
                report(problem, out)?;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if out.json {
        let listed: Vec<Value> = problems.iter().map(Problem::json).collect();
        out.json(&json!({
            "events_checked": events, "events_not_checked": unchecked, "held_back_by": held_back_by,
            "snapshots_checked": snapshots,
            "stale_snapshots": stale, "forgotten_snapshots": forgotten,
            "problems": listed, "seconds": seconds, "checked_at": time(chrono::Utc::now()),
        }))?;
    } else {
        if unchecked > 0 {
            out.line(format!(
                "{unchecked} events committed after position {after} were not checked: a write transaction open \
                 elsewhere{} holds the global log back (waited {} s); run `doctor` again once it has ended",
                in_parentheses(&held_back_by),
                settle_wait.as_secs()
            ))?;
        }
        out.line(format!(
            "checked {events} events and {snapshots} snapshots ({stale} stale, {forgotten} of forgotten subjects: \
             ignored on load) in {seconds:.1} s: {} {}",
            problems.len(),
            if problems.len() == 1 { "problem" } else { "problems" }
        ))?;
    }
    Ok(if problems.is_empty() && unchecked == 0 {
        Exit::Ok
    } else {
        Exit::Problems
    })
}

/// What holds back `held_back` events, when there are any: best effort, a store that cannot
/// tell (or a failing query) leaves it unnamed.
pub(crate) async fn holder<S: CliStore>(cli: &Cli<S>, held_back: u64) -> Option<String> {
    match held_back {
        0 => None,
        _ => cli.store.held_back_by().await.ok().flatten(),
    }
}

/// ` (what)`, or nothing.
pub(crate) fn in_parentheses(what: &Option<String>) -> String {
    what.as_deref().map(|what| format!(" ({what})")).unwrap_or_default()
}

/// How often it looks again meanwhile.
const SETTLE_POLL: Duration = Duration::from_millis(200);
