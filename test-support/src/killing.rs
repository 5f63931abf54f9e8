//! Writer processes killed with `SIGKILL` at random moments, on any store: the parent
//! ([`KillRun`]) starts a child test that appends flat out ([`write_until_killed`]), kills it
//! mid-write, and checks after every kill that no batch is stored in part, while a watcher reads
//! the streams all along and looks for a batch visible in part.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use es_core::{EventStore, GlobalLog, StreamId, StreamSlice};
use futures_util::TryStreamExt;

use crate::history::{History, Report};
use crate::load::{incomplete_batches, Appenders};
use crate::{error, ChildTest, Rng, TestDatabaseError};

/// Where the child writes its journal (set by [`KillRun`]).
pub const JOURNAL_VAR: &str = "ES_KILLED_WRITER_JOURNAL";

/// The child's seed (set by [`KillRun`]).
pub const SEED_VAR: &str = "ES_KILLED_WRITER_SEED";

/// A child stops by itself after this long, should its parent never kill it.
const CHILD_LIFE: Duration = Duration::from_secs(60);

/// The appenders of a child: 3 writers on 4 streams `case/killed-N`, batches of 1 to 40
/// events, no pause.
pub fn child_appenders(seed: u64) -> Appenders {
    Appenders {
        writers: 3,
        streams: 4,
        prefix: "killed".into(),
        batch: 1..41,
        pause: Duration::ZERO,
        seed,
        ..Appenders::default()
    }
}

/// The body of the child test: when [`JOURNAL_VAR`] is set, appends with [`child_appenders`]
/// to `store`, journaling every attempt, until it is killed (or a minute has passed). Returns
/// `false` at once when the variable is not set: the child test then runs with the suite and
/// must do nothing.
pub async fn write_until_killed<S: EventStore + Clone + 'static>(store: &S) -> Result<bool, TestDatabaseError> {
    let Some(journal) = std::env::var_os(JOURNAL_VAR) else {
        return Ok(false);
    };
    let seed = std::env::var(SEED_VAR)
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(1);
    let history = History::journaled(Path::new(&journal)).map_err(|e| {
        error(format!(
            "cannot open the journal {}: {e}",
            PathBuf::from(&journal).display()
        ))
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = child_appenders(seed).spawn(store, &history, &stop);
    tokio::time::sleep(CHILD_LIFE).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let _ = writer.await;
    }
    Ok(true)
}

/// The parent's side: `kills` times, start the child test, let it write for a random moment,
/// kill it with `SIGKILL`, and check the history of every child so far against the store.
#[derive(Debug, Clone)]
pub struct KillRun {
    /// The child test's full path in the test binary (it calls [`write_until_killed`]).
    pub child_test: String,
    /// What the child needs to open the store.
    pub vars: Vec<(String, String)>,
    /// How many children to kill.
    pub kills: u64,
    /// How long a child writes before it is killed, drawn from this range.
    pub writing: std::ops::Range<Duration>,
    /// The seed of the moments and of the children.
    pub seed: u64,
}

/// A temporary directory for the children's journal, removed when dropped (a failed check
/// included).
struct JournalDir(PathBuf);

impl JournalDir {
    fn create() -> Result<Self, TestDatabaseError> {
        let dir = std::env::temp_dir().join(format!("es-killed-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| error(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Self(dir))
    }
}

impl Drop for JournalDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(%e, "cannot remove a journal directory");
        }
    }
}

/// What a [`KillRun`] saw.
#[derive(Debug, Clone, Default)]
pub struct KillFigures {
    /// Children killed while they were writing.
    pub kills: u64,
    /// Stream reads the watcher made while the children wrote.
    pub reads: u64,
    /// Batches the watcher saw in part (must be 0).
    pub seen_in_part: u64,
    /// The last check of the whole history.
    pub report: Report,
}

impl std::fmt::Display for KillFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} writer processes killed mid-write; {} stream reads during the writes saw {} batches in part; \
             history: {}",
            self.kills, self.reads, self.seen_in_part, self.report
        )
    }
}

impl KillRun {
    /// Runs the kills against `store`, the store the children write to. Panics, saying what,
    /// when a check after a kill finds the history broken; returns the figures otherwise.
    pub async fn run<S: EventStore + GlobalLog + Clone + 'static>(
        &self,
        store: &S,
    ) -> Result<KillFigures, TestDatabaseError> {
        let streams: Vec<StreamId> = (0..child_appenders(0).streams)
            .map(|n| StreamId::new("case", format!("killed-{n}")))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (reads, seen_in_part) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let watcher = tokio::spawn(watch(
            store.clone(),
            streams,
            Arc::clone(&stop),
            Arc::clone(&reads),
            Arc::clone(&seen_in_part),
        ));
        let dir = JournalDir::create()?;
        // One file: every child appends to it.
        let journal_path = dir.0.join("journal");
        let mut rng = Rng::new(self.seed);
        let mut figures = KillFigures::default();
        for kill in 0..self.kills {
            let seed = (self.seed ^ kill).to_string();
            let journal = journal_path.to_string_lossy().into_owned();
            let mut vars: Vec<(&str, &str)> = vec![(JOURNAL_VAR, &journal), (SEED_VAR, &seed)];
            vars.extend(self.vars.iter().map(|(name, value)| (name.as_str(), value.as_str())));
            let written = journal_len(&journal_path);
            let mut child = ChildTest::spawn(&self.child_test, &vars)?;
            wait_for_writes(&mut child, &journal_path, written).await?;
            tokio::time::sleep(rng.duration(self.writing.clone())).await;
            let status = child.kill()?;
            if status.success() {
                return Err(error(format!("child {kill} ended by itself before it was killed")));
            }
            figures.kills += 1;
            let history = History::new();
            history
                .load_journal(&journal_path)
                .map_err(|e| error(format!("cannot read the journal: {e}")))?;
            let report = history
                .check(store)
                .await
                .map_err(|e| error(format!("cannot read the store back: {e}")))?;
            report.assert_clean();
            figures.report = report;
        }
        stop.store(true, Ordering::Relaxed);
        let _ = watcher.await;
        figures.reads = reads.load(Ordering::Relaxed);
        figures.seen_in_part = seen_in_part.load(Ordering::Relaxed);
        Ok(figures)
    }
}

fn journal_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

/// Waits (up to a minute) until the child has written to the journal past `written`.
async fn wait_for_writes(child: &mut ChildTest, journal: &Path, written: u64) -> Result<(), TestDatabaseError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while journal_len(journal) <= written {
        if !child.is_running() {
            return Err(error("the child ended before it wrote anything"));
        }
        if Instant::now() > deadline {
            return Err(error("the child wrote nothing within a minute"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Reads every stream whole, over and over until `stop`, counting the batches seen in part.
async fn watch<S: EventStore>(
    store: S,
    streams: Vec<StreamId>,
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    seen_in_part: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        for stream in &streams {
            let read: Result<Vec<_>, _> = store.read_stream(stream, StreamSlice::all()).try_collect().await;
            // A read that fails (a busy file, say) proves nothing either way.
            if let Ok(events) = read {
                reads.fetch_add(1, Ordering::Relaxed);
                let incomplete = incomplete_batches(&events);
                if !incomplete.is_empty() {
                    tracing::error!(%stream, ?incomplete, "a batch is visible in part");
                    seen_in_part.fetch_add(incomplete.len() as u64, Ordering::Relaxed);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
