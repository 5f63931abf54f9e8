//! What is measured: the stores, the implementations, the scenarios with their metrics and
//! targets, and the sizes of a full, quick or smoke run.

use std::fmt;

/// The store a scenario runs on. Each has its own implementations, its own section of the
/// report, and its own raw baseline that es-rs's targets are judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// PostgreSQL: es-rs on es-postgres, cqrs-es on postgres-es, raw sqlx.
    Postgres,
    /// SQLite: es-rs on es-sqlite, raw rusqlite, each on files of its own.
    Sqlite,
}

impl Backend {
    /// Both, in report order.
    pub const ALL: [Backend; 2] = [Self::Postgres, Self::Sqlite];

    /// The short id used on the command line of child processes and in the document's markers.
    pub fn id(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }

    /// The section heading.
    pub fn label(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Sqlite => "SQLite",
        }
    }

    /// Parses [`Backend::id`].
    pub fn parse(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|backend| backend.id() == id)
    }

    /// The implementations measured on this store, in table order (the raw baseline last).
    pub fn implementations(self) -> &'static [Implementation] {
        match self {
            Self::Postgres => &Implementation::ALL,
            Self::Sqlite => &[Implementation::Ours, Implementation::Raw],
        }
    }

    /// The scenarios on this store, in table order.
    pub fn scenarios(self) -> Vec<Scenario> {
        Scenario::ALL
            .into_iter()
            .filter(|scenario| scenario.backend() == self)
            .collect()
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One of the implementations under test; which store it runs on is the scenario's
/// [`Backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Implementation {
    /// This framework: es-core's repository on es-postgres, or on es-sqlite.
    Ours,
    /// cqrs-es 0.5 with postgres-es 0.5 (PostgreSQL only).
    Peer,
    /// The raw baseline: sqlx on PostgreSQL, rusqlite on SQLite.
    Raw,
}

impl Implementation {
    /// All three, in table order.
    pub const ALL: [Implementation; 3] = [Self::Ours, Self::Peer, Self::Raw];

    /// The short id used in schema names and on the command line.
    pub fn id(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Peer => "peer",
            Self::Raw => "raw",
        }
    }

    /// The column heading on `backend` (the raw baselines differ).
    pub fn label_on(self, backend: Backend) -> &'static str {
        match (self, backend) {
            (Self::Ours, _) => "es-rs",
            (Self::Peer, _) => "cqrs-es",
            (Self::Raw, Backend::Postgres) => "raw sqlx",
            (Self::Raw, Backend::Sqlite) => "raw rusqlite",
        }
    }

    /// The name in the ratio columns' headings ("es-rs / raw").
    pub fn short_label(self) -> &'static str {
        match self {
            Self::Ours => "es-rs",
            Self::Peer => "cqrs-es",
            Self::Raw => "raw",
        }
    }

    /// Parses [`Implementation::id`].
    pub fn parse(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|implementation| implementation.id() == id)
    }
}

/// One measured scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// 1a. One-event commands on new aggregates, one after the other.
    NewSequential,
    /// 1b. One-event commands on new aggregates from concurrent tasks.
    NewConcurrent,
    /// 2a. Commands on one live aggregate whose stream grows, without snapshots.
    Live,
    /// 2b. The same with snapshots (the raw baseline keeps its state cached in all of 2).
    LiveSnapshots,
    /// 2c. The same with the state kept in memory between commands.
    LiveCache,
    /// 3a. Rehydrating a long stream without a snapshot.
    Load,
    /// 3b. Rehydrating the same stream from its snapshot.
    LoadSnapshot,
    /// 3c. Rehydrating a very long stream without a snapshot: the memory scenario.
    LoadLarge,
    /// 4a. One command appending a batch to a new stream.
    Batch,
    /// 4b. One command appending a large batch to a new stream.
    BatchLarge,
    /// 5. Reading every event in global order.
    ReadAll,
    /// 6. Decoding stored events of which half are at an older schema version.
    Upcast,
    /// 7. Bulk import of a history through `COPY` (cqrs-es has none: not measured).
    BulkImport,
    /// 8. A projection catching up with scenario 5's events into a PostgreSQL read model.
    CatchUp,
    /// 9. What scenario 5's events take on disk, per event.
    Storage,
    /// s1a. SQLite: one-event commands on new aggregates, one after the other.
    SqliteNewSequential,
    /// s3a. SQLite: rehydrating a stream without a snapshot.
    SqliteLoad,
    /// s4b. SQLite: one command appending a large batch to a new stream.
    SqliteBatchLarge,
    /// s5. SQLite: reading every event in global order, in pages.
    SqliteReadAll,
}

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// More is better (throughput).
    Higher,
    /// Less is better (time).
    Lower,
}

/// One figure a scenario reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    /// The key in a child's result.
    pub key: &'static str,
    /// The label in the table.
    pub label: &'static str,
    /// Which way it improves.
    pub better: Better,
    /// The target for this framework, if the issue sets one.
    pub target: Option<Target>,
    /// A second target, judged like the first (an absolute floor beside a ratio to raw).
    pub also: Option<Target>,
    /// Whether the implementations' figures are compared with each other (not for figures that
    /// are themselves ratios within one implementation).
    pub compare: bool,
}

/// A target for this framework, from the issue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// This framework's figure divided by the raw baseline's must be at least this.
    AtLeastRaw(f64),
    /// This framework's figure divided by the raw baseline's must be at most this.
    AtMostRaw(f64),
    /// This framework's figure itself (a ratio it measured, or a throughput) must be at least
    /// this.
    AtLeast(f64),
}

impl Target {
    /// Whether `ours / reference` meets the target.
    pub fn met(self, ratio: f64) -> bool {
        match self {
            Self::AtLeastRaw(least) | Self::AtLeast(least) => ratio >= least,
            Self::AtMostRaw(most) => ratio <= most,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AtLeastRaw(least) => write!(f, "≥ {least:.2}x raw"),
            Self::AtMostRaw(most) => write!(f, "≤ {most:.2}x raw"),
            // A throughput floor reads as one, in grouped digits.
            Self::AtLeast(least) if *least >= 1000.0 => write!(f, "≥ {}/s", group_digits(*least as u64)),
            Self::AtLeast(least) => write!(f, "≥ {least:.2}"),
        }
    }
}

const fn metric(key: &'static str, label: &'static str, better: Better, target: Option<Target>) -> Metric {
    Metric {
        key,
        label,
        better,
        target,
        also: None,
        compare: true,
    }
}

/// Events per second, with the target of at least `ratio` times the raw baseline's.
const fn events_per_s_at_least_raw(ratio: f64) -> Metric {
    metric(
        "events_per_s",
        "events/s",
        Better::Higher,
        Some(Target::AtLeastRaw(ratio)),
    )
}

/// The median latency of commands.
const P50: Metric = metric("p50_ms", "p50 latency (ms)", Better::Lower, None);

/// The 99th-percentile latency of commands.
const P99: Metric = metric("p99_ms", "p99 latency (ms)", Better::Lower, None);

/// Throughput of one-event commands on new aggregates: one round trip, so ≥ 0.9x raw.
const NEW_COMMANDS: &[Metric] = &[events_per_s_at_least_raw(0.9), P50, P99];

/// Commands on a growing stream, without a target: the target applies with the state cache.
const LIVE: &[Metric] = &[metric("commands_per_s", "commands/s", Better::Higher, None)];

/// Snapshots or a cache keep the load flat: ≥ 0.5x raw (judged with the cache, the mechanism
/// that can reach it; snapshots still read the snapshot and the stream's tail per command).
const LIVE_FLAT: &[Metric] = &[metric(
    "commands_per_s",
    "commands/s",
    Better::Higher,
    Some(Target::AtLeastRaw(0.5)),
)];

/// Load + fold without a snapshot: ≤ 1.1x the raw time (3a and 3c).
const LOAD: &[Metric] = &[metric("ms", "ms", Better::Lower, Some(Target::AtMostRaw(1.1)))];

/// A time without a target.
const TIME: &[Metric] = &[metric("ms", "ms", Better::Lower, None)];

/// One command appending a large batch: ≤ 1.3x the raw time.
const BATCH_LARGE: &[Metric] = &[metric("ms", "ms", Better::Lower, Some(Target::AtMostRaw(1.3)))];

/// The global read: ≥ 0.8x the raw throughput.
const READ_ALL: &[Metric] = &[events_per_s_at_least_raw(0.8)];

/// Catch-up into a read model: reported beside the raw baseline, without a target.
const CATCH_UP: &[Metric] = &[metric("events_per_s", "events/s", Better::Higher, None)];

/// Bytes per stored event: reported, without a target.
const STORAGE: &[Metric] = &[
    metric("total_bytes", "bytes/event, table + indexes", Better::Lower, None),
    metric("table_bytes", "bytes/event, table", Better::Lower, None),
    metric("index_bytes", "bytes/event, indexes", Better::Lower, None),
];

/// Decoding with upcasting. The current-version half may cost no more with the upcaster
/// registered than without: judged on the paired ratio, within the measurement's own noise,
/// 5% (the raw baseline's two decoders do identical work on these events, and their ratio
/// still moves by that much between builds: code layout).
const UPCAST: &[Metric] = &[
    metric("mixed_per_s", "all events, events/s", Better::Higher, None),
    metric(
        "current_per_s",
        "current-version half, upcaster registered, events/s",
        Better::Higher,
        None,
    ),
    metric(
        "plain_per_s",
        "current-version half, no upcaster registered, events/s",
        Better::Higher,
        None,
    ),
    Metric {
        key: "with_vs_without",
        label: "current-version half, speed with / without upcaster (median of paired passes)",
        better: Better::Higher,
        target: Some(Target::AtLeast(0.95)),
        also: None,
        compare: false,
    },
];

/// Bulk import: ≥ 0.8x a plain `COPY` of the same rows, and at least 100,000 events/s.
const BULK_IMPORT: &[Metric] = &[Metric {
    also: Some(Target::AtLeast(100_000.0)),
    ..events_per_s_at_least_raw(0.8)
}];

/// SQLite, one-event commands: each is one durable commit on both sides, so ≥ 0.8x raw.
const SQLITE_NEW_COMMANDS: &[Metric] = &[events_per_s_at_least_raw(0.8), P50, P99];

/// SQLite, a large batch: ≥ 0.7x the raw throughput (events/s from the median time).
const SQLITE_BATCH_LARGE: &[Metric] = &[events_per_s_at_least_raw(0.7), metric("ms", "ms", Better::Lower, None)];

/// SQLite, load + fold without a snapshot: ≤ 1.2x the raw time.
const SQLITE_LOAD: &[Metric] = &[metric("ms", "ms", Better::Lower, Some(Target::AtMostRaw(1.2)))];

/// SQLite, the paged global read: ≥ 0.8x the raw throughput.
const SQLITE_READ_ALL: &[Metric] = &[events_per_s_at_least_raw(0.8)];

impl Scenario {
    /// Every scenario, in table order.
    pub const ALL: [Scenario; 19] = [
        Self::NewSequential,
        Self::NewConcurrent,
        Self::Live,
        Self::LiveSnapshots,
        Self::LiveCache,
        Self::Load,
        Self::LoadSnapshot,
        Self::LoadLarge,
        Self::Batch,
        Self::BatchLarge,
        Self::ReadAll,
        Self::Upcast,
        Self::BulkImport,
        Self::CatchUp,
        Self::Storage,
        Self::SqliteNewSequential,
        Self::SqliteLoad,
        Self::SqliteBatchLarge,
        Self::SqliteReadAll,
    ];

    /// The id used on the command line (`--only`) and in schema names.
    pub fn id(self) -> &'static str {
        match self {
            Self::NewSequential => "1a",
            Self::NewConcurrent => "1b",
            Self::Live => "2a",
            Self::LiveSnapshots => "2b",
            Self::LiveCache => "2c",
            Self::Load => "3a",
            Self::LoadSnapshot => "3b",
            Self::LoadLarge => "3c",
            Self::Batch => "4a",
            Self::BatchLarge => "4b",
            Self::ReadAll => "5",
            Self::Upcast => "6",
            Self::BulkImport => "7",
            Self::CatchUp => "8",
            Self::Storage => "9",
            Self::SqliteNewSequential => "s1a",
            Self::SqliteLoad => "s3a",
            Self::SqliteBatchLarge => "s4b",
            Self::SqliteReadAll => "s5",
        }
    }

    /// The store the scenario runs on.
    pub fn backend(self) -> Backend {
        match self {
            Self::SqliteNewSequential | Self::SqliteLoad | Self::SqliteBatchLarge | Self::SqliteReadAll => {
                Backend::Sqlite
            }
            _ => Backend::Postgres,
        }
    }

    /// Parses [`Scenario::id`].
    pub fn parse(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scenario| scenario.id() == id)
    }

    /// Whether the scenario reads data seeded before the repetitions (rather than writing its
    /// own into a fresh schema).
    pub fn reads_seeded_data(self) -> bool {
        matches!(
            self,
            Self::Load
                | Self::LoadSnapshot
                | Self::LoadLarge
                | Self::ReadAll
                | Self::CatchUp
                | Self::Storage
                | Self::SqliteLoad
                | Self::SqliteReadAll
        )
    }

    /// The implementations measured in this scenario, in table order: those of its store,
    /// less cqrs-es where it has nothing to compare (no bulk import, no read model kept in the
    /// database): its column shows "–".
    pub fn implementations(self) -> &'static [Implementation] {
        match self {
            Self::BulkImport | Self::CatchUp => &[Implementation::Ours, Implementation::Raw],
            _ => self.backend().implementations(),
        }
    }

    /// Whether the scenario needs a database at all.
    pub fn uses_database(self) -> bool {
        self != Self::Upcast
    }

    /// What the scenario does, with its sizes, after its id: "1a. ...".
    pub fn title(self, sizes: &Sizes) -> String {
        let n = |value: u64| group_digits(value);
        // Scenarios that differ only in size share their sentence.
        let on_new = |commands, how: &str| format!("{} one-event commands on new aggregates, {how}", n(commands));
        let rehydrate = |events| format!("rehydrate an aggregate of {} events, no snapshot", n(events));
        let append = |events| format!("one command appending {} events to a new stream", n(events));
        let what = match self {
            Self::NewSequential => on_new(sizes.sequential_commands, "sequential"),
            Self::NewConcurrent => on_new(sizes.concurrent_commands, &format!("{} concurrent tasks", sizes.tasks)),
            Self::Live => format!(
                "commands on one live aggregate, stream growing 0 → {} events, replayed (no snapshots, no cache)",
                n(sizes.live_commands)
            ),
            Self::LiveSnapshots => format!(
                "the same, snapshot every {} events (raw: state cached in all of 2)",
                sizes.live_snapshot_every
            ),
            Self::LiveCache => {
                "the same, state kept between commands (es-rs `with_cache`, cqrs-es aggregate store)".to_owned()
            }
            Self::Load | Self::SqliteLoad => rehydrate(sizes.load_events),
            Self::LoadSnapshot => "rehydrate the same aggregate from its snapshot".to_owned(),
            Self::LoadLarge => rehydrate(sizes.load_large_events),
            Self::Batch => append(sizes.batch_events),
            Self::BatchLarge | Self::SqliteBatchLarge => append(sizes.batch_large_events),
            Self::SqliteNewSequential => on_new(sizes.sequential_commands, "sequential"),
            Self::SqliteReadAll => format!(
                "read all {} events from position 0 ({} streams) in pages of {}, decoded",
                n(sizes.read_all_events),
                sizes.read_all_streams,
                sizes.read_all_page
            ),
            Self::ReadAll => format!(
                "read all {} events from position 0 ({} streams), decoded",
                n(sizes.read_all_events),
                sizes.read_all_streams
            ),
            Self::Upcast => format!(
                "decode {} stored events, half at the old schema version (in memory)",
                n(sizes.upcast_events)
            ),
            Self::BulkImport => format!(
                "bulk import of {} events (the benchmark's small deposit events, {} accounts)",
                n(sizes.import_events),
                n(sizes.import_accounts)
            ),
            Self::CatchUp => format!(
                "a projection catching up with scenario 5's {} events into a PostgreSQL read model (an upsert per \
                 deposit, {} events per transaction)",
                n(sizes.read_all_events),
                crate::read_model::UNIT_EVENTS
            ),
            Self::Storage => format!(
                "storage of scenario 5's {} events: bytes per event in the table and its indexes",
                n(sizes.read_all_events)
            ),
        };
        format!("{}. {what}", self.id())
    }

    /// The figures the scenario reports, with the targets.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Self::NewSequential | Self::NewConcurrent => NEW_COMMANDS,
            Self::Live | Self::LiveSnapshots => LIVE,
            Self::LiveCache => LIVE_FLAT,
            Self::Load => LOAD,
            Self::LoadLarge => LOAD,
            Self::LoadSnapshot | Self::Batch => TIME,
            Self::BatchLarge => BATCH_LARGE,
            Self::ReadAll => READ_ALL,
            Self::Upcast => UPCAST,
            Self::BulkImport => BULK_IMPORT,
            Self::CatchUp => CATCH_UP,
            Self::Storage => STORAGE,
            Self::SqliteNewSequential => SQLITE_NEW_COMMANDS,
            Self::SqliteLoad => SQLITE_LOAD,
            Self::SqliteBatchLarge => SQLITE_BATCH_LARGE,
            Self::SqliteReadAll => SQLITE_READ_ALL,
        }
    }

    /// The memory target: this framework's peak RSS divided by the raw baseline's.
    pub fn memory_target(self) -> Option<f64> {
        (self == Self::LoadLarge).then_some(2.0)
    }
}

/// How big a run is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes {
    /// `full`, `quick` or `smoke`.
    pub name: &'static str,
    /// Repetitions of every (scenario, implementation) measurement.
    pub repetitions: usize,
    /// Commands before the timed ones in command scenarios (on other aggregates).
    pub warmup: u64,
    /// Scenario 1a.
    pub sequential_commands: u64,
    /// Scenario 1b, all tasks together.
    pub concurrent_commands: u64,
    /// Scenario 1b's tasks.
    pub tasks: u64,
    /// Scenario 2: commands, and so the final stream length.
    pub live_commands: u64,
    /// Scenario 2b's snapshot interval.
    pub live_snapshot_every: u64,
    /// Scenario 3a/3b's stream length (also its snapshot interval when seeding).
    pub load_events: u64,
    /// Scenario 3c's stream length.
    pub load_large_events: u64,
    /// Timed loads per run in 3a and 3b.
    pub load_iterations: usize,
    /// Timed loads per run in 3c.
    pub load_large_iterations: usize,
    /// Scenario 4a's batch.
    pub batch_events: u64,
    /// Scenario 4b's batch.
    pub batch_large_events: u64,
    /// Timed batches per run in 4a.
    pub batch_iterations: usize,
    /// Timed batches per run in 4b.
    pub batch_large_iterations: usize,
    /// Scenario 5's events.
    pub read_all_events: u64,
    /// Scenario 5's streams.
    pub read_all_streams: u64,
    /// Scenario 5's page size for this framework's paged `read_all`.
    pub read_all_page: usize,
    /// Timed passes per run in 5.
    pub passes: usize,
    /// Timed passes of each decoder per run in 6 (each pass is short, and the target compares
    /// two of them).
    pub decode_passes: usize,
    /// Scenario 6's events.
    pub upcast_events: u64,
    /// Scenario 7's events (after an untimed import of a fiftieth of them).
    pub import_events: u64,
    /// Scenario 7's streams.
    pub import_accounts: u64,
    /// Scenario 7's chunk size for es-rs (the default, `ImportOptions::DEFAULT_CHUNK_SIZE`,
    /// but in smoke runs).
    pub import_chunk: usize,
}

impl Sizes {
    /// The sizes, 5 repetitions.
    pub fn full() -> Self {
        Self {
            name: "full",
            repetitions: 5,
            warmup: 20,
            sequential_commands: 1_000,
            concurrent_commands: 2_000,
            tasks: 8,
            live_commands: 2_000,
            live_snapshot_every: 100,
            load_events: 10_000,
            load_large_events: 100_000,
            load_iterations: 10,
            load_large_iterations: 3,
            batch_events: 1_000,
            batch_large_events: 10_000,
            batch_iterations: 10,
            batch_large_iterations: 3,
            read_all_events: 100_000,
            read_all_streams: 100,
            // The projection runner's default batch size.
            read_all_page: es_core::RunnerOptions::default().batch_size,
            passes: 3,
            decode_passes: 15,
            upcast_events: 100_000,
            import_events: 1_000_000,
            import_accounts: 1_000,
            import_chunk: es_postgres::ImportOptions::DEFAULT_CHUNK_SIZE,
        }
    }

    /// The sizes with fewer repetitions and iterations.
    pub fn quick() -> Self {
        Self {
            name: "quick",
            repetitions: 2,
            sequential_commands: 300,
            concurrent_commands: 800,
            load_iterations: 3,
            load_large_iterations: 1,
            batch_iterations: 3,
            batch_large_iterations: 1,
            passes: 1,
            decode_passes: 3,
            import_events: 200_000,
            ..Self::full()
        }
    }

    /// Tiny sizes that exercise every code path in seconds (the test suite runs these).
    pub fn smoke() -> Self {
        Self {
            name: "smoke",
            repetitions: 1,
            warmup: 2,
            sequential_commands: 10,
            concurrent_commands: 16,
            tasks: 8,
            live_commands: 25,
            live_snapshot_every: 10,
            load_events: 40,
            load_large_events: 120,
            load_iterations: 2,
            load_large_iterations: 1,
            batch_events: 10,
            batch_large_events: 30,
            batch_iterations: 2,
            batch_large_iterations: 1,
            read_all_events: 200,
            read_all_streams: 10,
            read_all_page: 50,
            passes: 1,
            decode_passes: 1,
            upcast_events: 200,
            import_events: 300,
            import_accounts: 10,
            import_chunk: 100,
        }
    }

    /// The sizes named `name`.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "full" => Some(Self::full()),
            "quick" => Some(Self::quick()),
            "smoke" => Some(Self::smoke()),
            _ => None,
        }
    }
}

/// `1234567` as `1,234,567`.
pub fn group_digits(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}
