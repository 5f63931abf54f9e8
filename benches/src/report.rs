//! The markdown: the results table, the memory table, and `docs/BENCHMARKS.md`.

use std::fmt::Write;

use crate::run::Results;
use crate::scenario::{group_digits, Backend, Better, Implementation, Metric, Scenario, Target};
use crate::stats::Spread;
use crate::{verdicts, BenchResult};

/// The spread of metric `key` over the repetitions of (`scenario`, `implementation`).
fn spread(results: &Results, scenario: Scenario, implementation: Implementation, key: &str) -> Option<Spread> {
    let values: Vec<f64> = results
        .runs
        .get(&(scenario, implementation))?
        .iter()
        .filter_map(|measurement| measurement.metrics.get(key).copied())
        .collect();
    (!values.is_empty()).then(|| Spread::of(&values))
}

/// The spread of the peak memory (MiB) over the repetitions of (`scenario`, `implementation`).
fn memory(results: &Results, scenario: Scenario, implementation: Implementation) -> Option<Spread> {
    let values: Vec<f64> = results
        .runs
        .get(&(scenario, implementation))?
        .iter()
        .map(|measurement| measurement.peak_rss_kib as f64 / 1024.0)
        .collect();
    (!values.is_empty()).then(|| Spread::of(&values))
}

/// A figure with about three significant digits (thousands grouped).
fn number(value: f64) -> String {
    if !value.is_finite() {
        return "–".to_owned();
    }
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        group_digits(value.round() as u64)
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn figure(spread: Option<Spread>) -> String {
    match spread {
        Some(spread) => format!(
            "{} <sub>{}–{}</sub>",
            number(spread.median),
            number(spread.min),
            number(spread.max)
        ),
        None => "–".to_owned(),
    }
}

fn ratio(numerator: Option<Spread>, denominator: Option<Spread>) -> Option<f64> {
    let value = numerator?.median / denominator?.median;
    value.is_finite().then_some(value)
}

fn ratio_cell(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |value| format!("{value:.2}x"))
}

fn verdict(target: Target, ratio: Option<f64>) -> (String, String) {
    let met = match ratio {
        Some(ratio) if target.met(ratio) => "met",
        Some(_) => "**not met**",
        None => "–",
    };
    (target.to_string(), met.to_owned())
}

/// The ratio (or figure) `target` of `metric` is judged on.
fn target_ratio(results: &Results, scenario: Scenario, metric: &Metric, target: Target) -> Option<f64> {
    let ours = spread(results, scenario, Implementation::Ours, metric.key);
    match target {
        Target::AtLeastRaw(_) | Target::AtMostRaw(_) => {
            ratio(ours, spread(results, scenario, Implementation::Raw, metric.key))
        }
        Target::AtLeast(_) => ours.map(|ours| ours.median),
    }
}

/// The scenarios of `backend` this run measured, in table order.
fn scenarios_of(results: &Results, backend: Backend) -> Vec<Scenario> {
    results
        .options
        .scenarios
        .iter()
        .copied()
        .filter(|scenario| scenario.backend() == backend)
        .collect()
}

/// The stores this run measured, in report order.
pub fn backends(results: &Results) -> Vec<Backend> {
    Backend::ALL
        .into_iter()
        .filter(|&backend| !scenarios_of(results, backend).is_empty())
        .collect()
}

/// The results table of `backend`: one row per metric, each implementation's median with its
/// range over the repetitions, and the ratios of every pair.
pub fn results_table(results: &Results, backend: Backend) -> String {
    let implementations = backend.implementations();
    let pairs: Vec<(usize, usize)> = (0..implementations.len())
        .flat_map(|i| (i + 1..implementations.len()).map(move |j| (i, j)))
        .collect();
    let mut out = String::from("| Scenario | Metric |");
    for implementation in implementations {
        let _ = write!(out, " {} |", implementation.label_on(backend));
    }
    for &(i, j) in &pairs {
        let _ = write!(
            out,
            " {} / {} |",
            implementations[i].short_label(),
            implementations[j].short_label()
        );
    }
    out.push_str(" Target (es-rs) | |\n|---|---|");
    out.push_str(&"--:|".repeat(implementations.len() + pairs.len()));
    out.push_str("---|---|\n");
    for scenario in scenarios_of(results, backend) {
        for (i, metric) in scenario.metrics().iter().enumerate() {
            let title = if i == 0 {
                scenario.title(&results.options.sizes)
            } else {
                String::new()
            };
            let figures: Vec<Option<Spread>> = implementations
                .iter()
                .map(|&implementation| spread(results, scenario, implementation, metric.key))
                .collect();
            let arrow = match metric.better {
                Better::Higher => "↑",
                Better::Lower => "↓",
            };
            // Each target of the metric, judged alone; a second one follows the first.
            let verdicts: Vec<(String, String)> = [metric.target, metric.also]
                .into_iter()
                .flatten()
                .map(|target| verdict(target, target_ratio(results, scenario, metric, target)))
                .collect();
            let target = verdicts
                .iter()
                .map(|(target, _)| target.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let met = verdicts
                .iter()
                .map(|(_, met)| met.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let _ = write!(out, "| {title} | {} {arrow} |", metric.label);
            for &value in &figures {
                let _ = write!(out, " {} |", figure(value));
            }
            for &(i, j) in &pairs {
                let value = ratio(figures[i], figures[j]).filter(|_| metric.compare);
                let _ = write!(out, " {} |", ratio_cell(value));
            }
            let _ = writeln!(out, " {target} | {met} |");
        }
    }
    out
}

/// The memory table of `backend`: each run's peak resident memory (MiB), median and range, and
/// each implementation's against the raw baseline's.
pub fn memory_table(results: &Results, backend: Backend) -> String {
    let implementations = backend.implementations();
    let others: Vec<Implementation> = implementations
        .iter()
        .copied()
        .filter(|&implementation| implementation != Implementation::Raw)
        .collect();
    let mut out = String::from("| Scenario |");
    for implementation in implementations {
        let _ = write!(out, " {} |", implementation.label_on(backend));
    }
    for implementation in &others {
        let _ = write!(out, " {} / raw |", implementation.short_label());
    }
    out.push_str(" Target (es-rs) | |\n|---|");
    out.push_str(&"--:|".repeat(implementations.len() + others.len()));
    out.push_str("---|---|\n");
    for scenario in scenarios_of(results, backend) {
        let raw = memory(results, scenario, Implementation::Raw);
        let ours_to_raw = ratio(memory(results, scenario, Implementation::Ours), raw);
        let (target, met) = match scenario.memory_target() {
            Some(most) => (
                format!("≤ {most:.2}x raw"),
                match ours_to_raw {
                    Some(value) if value <= most => "met".to_owned(),
                    Some(_) => "**not met**".to_owned(),
                    None => "–".to_owned(),
                },
            ),
            None => (String::new(), String::new()),
        };
        let _ = write!(out, "| {} |", scenario.id());
        for &implementation in implementations {
            let _ = write!(out, " {} |", figure(memory(results, scenario, implementation)));
        }
        for &implementation in &others {
            let _ = write!(
                out,
                " {} |",
                ratio_cell(ratio(memory(results, scenario, implementation), raw))
            );
        }
        let _ = writeln!(out, " {target} | {met} |");
    }
    out
}

/// Both tables of `backend` with their legends, as its section of the document shows them.
pub fn tables(results: &Results, backend: Backend) -> String {
    let setup = match backend {
        Backend::Postgres => "the runtime, the connection pool and the warm-up",
        Backend::Sqlite => "the runtime, the connections (with SQLite's page caches) and the warm-up",
    };
    format!(
        "### Throughput and latency\n\n\
         Median over {reps} repetition(s), with the range (min–max) in small print. ↑: more is \
         better; ↓: less is better. Ratios divide medians: for ↑ rows above 1x means faster than the \
         other, for ↓ rows below 1x does.\n\n{}\n\
         ### Peak memory (MiB)\n\n\
         Peak resident set size (`VmHWM`) of the process that ran the measurement, one process per \
         run, including {setup}.\n\n{}{}{}",
        results_table(results, backend),
        memory_table(results, backend),
        verdicts::misses(backend, &missed(results, backend)),
        verdicts::notes(backend, &scenarios_of(results, backend)),
        reps = results.options.sizes.repetitions,
    )
}

/// The scenarios of `backend` with a target (of a figure or of memory) the run missed.
fn missed(results: &Results, backend: Backend) -> Vec<Scenario> {
    scenarios_of(results, backend)
        .into_iter()
        .filter(|&scenario| {
            let figure_missed = scenario.metrics().iter().any(|metric| {
                metric.target.into_iter().chain(metric.also).any(|target| {
                    target_ratio(results, scenario, metric, target).is_some_and(|ratio| !target.met(ratio))
                })
            });
            let memory_missed = scenario.memory_target().is_some_and(|most| {
                let ours = memory(results, scenario, Implementation::Ours);
                ratio(ours, memory(results, scenario, Implementation::Raw)).is_some_and(|ratio| ratio > most)
            });
            figure_missed || memory_missed
        })
        .collect()
}

/// What the benchmark prints: the tables of every store measured, under its name.
pub fn all_tables(results: &Results) -> String {
    backends(results)
        .into_iter()
        .map(|backend| format!("## {}\n\n{}", backend.label(), tables(results, backend)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A warning when other work shared the machine during the run.
fn shared_note(results: &Results) -> String {
    // The benchmark itself (a child and its PostgreSQL backends) accounts for a load of 1 to 2
    // on its own.
    if results.load_peak > 2.0 {
        " **The load went above 2 (the machine's CPUs) during this run**: other work may have \
         shared the machine, so the figures are noisier than on an idle one (see the ranges)."
            .to_owned()
    } else {
        String::new()
    }
}

/// The list items every section's "The run" starts with: command, start, machine.
fn run_items(results: &Results) -> String {
    let sizes = &results.options.sizes;
    let machine = &results.machine;
    format!(
        "- Command: `{command}` ({sizes_name} sizes, {reps} repetitions, took {elapsed:.0} s)
- Started: {started}
- Machine: {cpus} CPUs ({cpu_model}), {memory} memory, Linux {kernel}; load average
  (1/5/15 min) {load_before} before the run, {load_after} after, highest 1-minute load seen
  during the run {load_peak:.2}.{shared}",
        command = results.options.command,
        sizes_name = sizes.name,
        reps = sizes.repetitions,
        elapsed = results.elapsed.as_secs_f64(),
        started = results.started,
        cpus = machine.cpus,
        cpu_model = machine.cpu_model,
        memory = machine.memory,
        kernel = machine.kernel,
        load_before = results.load_before,
        load_after = results.load_after,
        load_peak = results.load_peak,
        shared = shared_note(results),
    )
}

/// The list items every section's "The run" ends with: toolchain and code.
fn build_items(results: &Results) -> String {
    format!(
        "- Toolchain: {rustc}, {profile} profile\n- Code: {revision}",
        rustc = results.rustc,
        revision = results.revision,
        profile = if cfg!(debug_assertions) { "debug" } else { "release" },
    )
}

/// The PostgreSQL section, without its markers.
fn postgres_section(results: &Results) -> String {
    let unknown = || "unknown".to_owned();
    let (version, settings, durability) = match &results.server {
        Some(server) => {
            let mut settings = String::new();
            for (name, value) in &server.settings {
                let _ = write!(settings, "`{name}` = `{value}`, ");
            }
            let durability = match (server.setting("fsync"), server.setting("synchronous_commit")) {
                (Some("on"), Some("on")) => "Default durability: `fsync` and `synchronous_commit` are on.",
                _ => "**Not the default durability**: see `fsync` and `synchronous_commit` above.",
            };
            (
                server.version.clone(),
                settings.trim_end_matches([',', ' ']).to_owned(),
                durability,
            )
        }
        None => (unknown(), unknown(), ""),
    };
    format!(
        r#"## PostgreSQL

es-rs (`es_core::Repository` on `es_postgres::PostgresStore`) against the most used Rust peer
(`cqrs-es` 0.5 with `postgres-es` 0.5) and a raw sqlx baseline doing the minimum SQL for the
same work, measured in one run, on one PostgreSQL server.

### The run

{run}
- Server: {database}
- PostgreSQL: {version}
- Settings: {settings}. {durability}
{build}

{tables}
### What each implementation does

- **es-rs**: the domain is written with `#[event]` (with a JSON upcaster for `MoneyDeposited`
  v1) and `#[derive(Aggregate)]`. Commands on new aggregates (1, 4) go through
  `Repository::create` (decide on the default state, append expecting no stream); commands on
  a live aggregate (2) through `Repository::execute` (load, decide, append with the loaded
  version as the expected version), with `Repository::with_snapshot_every` in 2b and
  `Repository::with_cache` in 2c; loads through `Repository::load` (from the snapshot in 3b);
  the global read streams the log with `GlobalLog::replay_all` (one query, bounded once by
  the visibility horizon, each row lent to the callback) and decodes each event. The store comes from `PostgresStore::connect`,
  with that constructor's pool settings (10 connections).
- **cqrs-es**: the same domain written idiomatically for cqrs-es 0.5: an `Aggregate` whose
  `handle` writes to the `EventSink`, a `CqrsFramework` over a `PersistedEventStore` over a
  `PostgresEventRepository` on postgres-es's documented tables, a
  `SemanticVersionEventUpcaster` for `MoneyDeposited` 1.0. Snapshots (2b, 3b) use
  `PersistedEventStore::new_snapshot_store`; 2c uses `new_aggregate_store` (the state is saved
  with every commit and loaded instead of the events); the global read is
  `QueryReplay::replay_all` into a counting `Query`. Pool as postgres-es's `default_postgress_pool` builds it (sqlx defaults, 10
  connections). One deviation from cqrs-es's examples: `handle` passes a copy of the aggregate
  to `EventSink::write`, not `self`, because cqrs-es 0.5's snapshot store applies the events of
  a command that takes a snapshot to the handled aggregate a second time, so `sink.write(event,
  self)` stores snapshots with those events counted twice (the checks below caught it).
- **raw sqlx**: one `events` table (identity `position`, `stream_id`, `version` unique per
  stream, `event_name`, `schema_version`, `payload jsonb`) and a `snapshots` table. A command on
  a new aggregate is one `INSERT`; a command on a live aggregate decides on state cached in the
  process and does one `INSERT` (the unique constraint is the concurrency check), in 2a and 2b
  alike; a batch is one `INSERT ... SELECT FROM unnest(...)`; a load is one streamed
  `SELECT ... ORDER BY version` (after the snapshot row in 3b) decoded row by row with serde;
  the global read is one streamed `SELECT ... ORDER BY position` of position, stream, version
  and the event, decoded. It upgrades `MoneyDeposited` v1 with a typed conversion, the cheapest
  upcast (es-rs offers it too, as `#[upcast(from = 1, typed = ...)]`, but this domain uses the
  JSON step es-rs's README shows; cqrs-es upcasters only take JSON values). Its pool skips the
  ping (`test_before_acquire(false)`): the floor is one round trip per statement.

Writing scenarios get a fresh schema each; reading scenarios (3, 5, 8, 9) use schemas each
implementation seeded through its own write path before the repetitions, then analyzed
(`ANALYZE`, as autovacuum would do within a minute): the reads meet a database in its steady
state. On a table never analyzed PostgreSQL plans es-rs's global read (bounded by the oldest
running transaction, an expression it cannot estimate) as a sort of every event after the
page's start; es-rs's bulk import analyzes the table when it ends for that reason.

Scenario 8 catches a new projection up with scenario 5's events into a table of balances per
account (one upsert per deposit), in units of the same size on both sides, each committed with
the position reached. es-rs: a `ProjectionRunner` over `PostgresStore::checkpoints()` (which
reads pages with `GlobalLog::read_filtered`, takes and checks its claim, and commits each batch
with its checkpoint row in one transaction); raw: one streamed `SELECT ... ORDER BY position` on
one connection, the upserts and a checkpoint row in transactions on another. cqrs-es keeps no
read model in the database and is not measured. Scenario 9 divides the size of scenario 5's
`events` table (with its TOAST) and of its indexes by its rows: es-rs stores an event id
(unique), the aggregate type and id apart, the metadata and a timestamp; the raw baseline's row
holds none of these; postgres-es stores the metadata as JSON and no id or timestamp. Scenario 6 is CPU
only: the stored events are built in memory in each implementation's format and decoded
through its own load path (es-rs: `EventSet::decode`; cqrs-es:
`PersistedEventStore::load_events` over an in-memory repository that maps stored bytes to
`SerializedEvent`s as postgres-es does; raw: a `match` and serde): all of them with the
upcaster registered, and the current-version half (the same events in memory) both with the
upcaster registered and without any.

Scenario 7 (bulk import) has no cqrs-es column: it has no bulk import. es-rs and raw sqlx each
write into a fresh schema made by `PostgresStore::migrate`, so into es-postgres's `events` table
(the same columns and three unique indexes), a history of {import} events over {accounts}
accounts, interleaved, that they build inside the timed section: es-rs hands a stream of
`ImportedEvent`s to `PostgresStore::import` (chunks of {chunk} events, one transaction each:
checked, encoded in `COPY`'s binary format, positions from the chunk's transaction id, progress
recorded with it); raw sqlx writes the same rows straight into one binary `COPY` (positions
counted from 1), a mebibyte per message. Each follows an untimed import of a fiftieth of that
size. Its second target is absolute: 100,000 events/s.

The upcasting target compares es-rs with itself: in each pass the current-version half is
decoded with the upcaster registered and with a type that has none, back to back in
alternating order; the figure is the median over the passes of the ratio of the two speeds,
and may fall 5% short of 1: the raw baseline's two decoders do identical work on these events
(its "upcaster" is a `match` arm that current-version events never reach), and their ratio,
shown as a control, still moves by that much from one build to the next (code layout).
"#,
        run = run_items(results),
        database = results.database.clone().unwrap_or_else(unknown),
        build = build_items(results),
        tables = tables(results, Backend::Postgres),
        import = group_digits(results.options.sizes.import_events),
        accounts = group_digits(results.options.sizes.import_accounts),
        chunk = group_digits(results.options.sizes.import_chunk as u64),
    )
}

/// The SQLite section, without its markers.
fn sqlite_section(results: &Results) -> String {
    let unknown = || "unknown".to_owned();
    let facts = results.sqlite.as_ref();
    let setting = |name: &str| {
        facts
            .and_then(|facts| facts.setting(name))
            .unwrap_or("unknown")
            .to_owned()
    };
    let (journal_mode, synchronous, busy_timeout) =
        (setting("journal_mode"), setting("synchronous"), setting("busy_timeout"));
    let synchronous_name = match synchronous.as_str() {
        "0" => " (OFF)",
        "1" => " (NORMAL)",
        "2" => " (FULL)",
        "3" => " (EXTRA)",
        _ => "",
    };
    let durability = if journal_mode == "wal" && synchronous == "2" {
        "Why: these are es-sqlite's defaults, and the durable choice: with `synchronous = FULL` \
         every commit waits until its write-ahead log frames are on disk (`fsync`), so an \
         acknowledged append survives power loss, as PostgreSQL's `synchronous_commit = on` does \
         above. `NORMAL` (`Synchronous::Normal`) would skip that wait, at the price of the last \
         commits on power loss; these figures do not use it."
    } else {
        "**Not es-sqlite's default durability** (WAL with `synchronous = FULL`): see the settings."
    };
    let file_system = facts.map_or_else(unknown, |facts| facts.file_system.clone());
    let tmpfs = if file_system.starts_with("tmpfs") || file_system.starts_with("ramfs") {
        " **The files were in memory: `fsync` costs nothing there, so the appends are not those of a disk.**"
    } else {
        ""
    };
    let sizes = &results.options.sizes;
    format!(
        r#"## SQLite

es-rs (`es_core::Repository` on `es_sqlite::SqliteStore`) against a raw rusqlite baseline doing
the minimum SQL for the same work, on files of the same kind, with the same library and
settings, measured in one run.

### The run

{run}
- Files: in a fresh directory of the run (`{dir}`) on {file_system}. Every writing run
  (s1a, s4b) gets a fresh file of its own; the reading scenarios (s3a, s5) read files each
  implementation seeded through its own write path before the repetitions.{tmpfs}
- SQLite: {version}, compiled into the binary by rusqlite's `bundled` feature; both sides
  link this one library (the raw baseline uses es-sqlite's re-export, `es_sqlite::rusqlite`).
- Settings, the same on both sides: `journal_mode` = `{journal_mode}`, `synchronous` =
  `{synchronous}`{synchronous_name}, `busy_timeout` = `{busy_timeout}` ms, as SQLite reports
  them on a connection of a store opened with `SqliteOptions::default()`; every run's check
  includes what each side's writing connection reports, so a difference fails the run.
  {durability}
{build}

{tables}
### What each implementation does

- **es-rs**: the same domain code as on PostgreSQL, through `Repository` on a `SqliteStore`
  opened with `SqliteStore::open_with(path, SqliteOptions::default())` and migrated.
  Commands on new aggregates (s1a, s4b) go through `Repository::create`; the load (s3a)
  through `Repository::load`, which folds what `EventStore::replay_if_open` lends; the global
  read (s5) pages through `GlobalLog::read_all` ({page} events a page, the projection runner's
  default) and decodes each event with `decode_record`. Every store call runs SQLite on one of
  Tokio's blocking threads (`spawn_blocking`). An append checks that each payload is JSON,
  takes the write lock (`BEGIN IMMEDIATE`), reads the stream's version and the last
  `recorded_at` (which it never goes below), inserts each event with one cached statement and
  commits; every statement is prepared once per connection.
- **raw rusqlite**: one `events` table of the same shape as es-sqlite's (`STRICT`, `position`
  the rowid, a unique 16-byte `event_id`, `aggregate_type`, `aggregate_id` and `version` unique
  together, name, schema version, JSON payload and metadata as text, `recorded_at`), without
  its `CHECK` constraints and append-only triggers. One connection, called directly on the
  calling thread (no hand-off), every statement cached. An append is one `BEGIN IMMEDIATE`
  transaction running the cached `INSERT` once per event, then `COMMIT`: the unique constraint
  on the version is the concurrency check, nothing is read first. It stores what es-rs stores
  (a fresh UUID v7 per event, the command's correlation id as metadata, serialized once per
  command, the append's time once per batch), so the rows are alike. A load is one
  `SELECT` of version, name, schema version and payload, decoded with serde from the row's
  borrowed bytes and folded row by row; the global read pages through `WHERE position > ?
  ORDER BY position LIMIT ?` with es-rs's page size, reading position, stream, version and the
  event.

The sizes are those of the PostgreSQL scenarios with the same numbers (1a, 3a, 4b, 5):
{sequential} commands after {warmup} untimed ones; a stream of {load} events loaded
{load_iterations} times per run (median); {batch} events appended {batch_iterations} times per
run (median) after one untimed batch; {read_all} events read {passes} times per run (median)
after one untimed pass.
"#,
        run = run_items(results),
        dir = facts.map_or_else(unknown, |facts| facts.dir.clone()),
        version = facts.map_or_else(unknown, |facts| facts.version.clone()),
        build = build_items(results),
        page = sizes.read_all_page,
        tables = tables(results, Backend::Sqlite),
        sequential = group_digits(sizes.sequential_commands),
        warmup = sizes.warmup,
        load = group_digits(sizes.load_events),
        load_iterations = sizes.load_iterations,
        batch = group_digits(sizes.batch_large_events),
        batch_iterations = sizes.batch_large_iterations,
        read_all = group_digits(sizes.read_all_events),
        passes = sizes.passes,
    )
}

/// The marker that opens section `name` of the document.
fn begin_marker(name: &str) -> String {
    format!("<!-- es-bench:begin {name} -->")
}

/// The marker that closes section `name` of the document.
fn end_marker(name: &str) -> String {
    format!("<!-- es-bench:end {name} -->")
}

/// The sections of an existing document, by name: the text between each section's markers.
fn sections(existing: &str) -> BenchResult<Vec<(String, String)>> {
    const OPEN: &str = "<!-- es-bench:begin ";
    let mut found = Vec::new();
    let mut rest = existing;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let line_end = after.find('\n').ok_or("a section marker without a line of its own")?;
        let name = after[..line_end]
            .split_whitespace()
            .next()
            .ok_or("a section marker without a name")?
            .to_owned();
        let body = &after[line_end + 1..];
        let end = end_marker(&name);
        let stop = body
            .find(&end)
            .ok_or_else(|| format!("section `{name}` has no end marker `{end}`"))?;
        found.push((name, body[..stop].to_owned()));
        rest = &body[stop + end.len()..];
    }
    Ok(found)
}

/// The hand-written sections of `kept` that no store's section places (figures of other
/// binaries, such as `contention`), as they were, in their order.
fn other_hand_written(kept: &[(String, String)]) -> String {
    let placed = |name: &str| name == SQLITE_NOTES || Backend::ALL.iter().any(|backend| backend.id() == name);
    let mut body = String::new();
    for (name, notes) in kept.iter().filter(|(name, _)| !placed(name)) {
        write_kept(&mut body, name, notes);
    }
    body
}

/// Writes the hand-written section `name` with its markers.
fn write_kept(body: &mut String, name: &str, notes: &str) {
    let _ = write!(
        body,
        "{} (written by hand; every run keeps it) -->\n{}{}\n\n",
        begin_marker(name).trim_end_matches(" -->"),
        notes,
        end_marker(name)
    );
}

/// The hand-written notes kept after the SQLite section: the analysis of targets not met.
const SQLITE_NOTES: &str = "sqlite-notes";

/// `docs/BENCHMARKS.md`: the sections of the stores this run measured are generated; the others
/// are kept from `existing` (the file as it was), so a run of one store leaves the other's
/// figures alone. Hand-written notes sections are always kept.
pub fn document(results: &Results, existing: Option<&str>) -> BenchResult<String> {
    let kept = match existing {
        Some(existing) => sections(existing)?,
        None => Vec::new(),
    };
    let kept_section = |name: &str| {
        kept.iter()
            .find(|(found, _)| found == name)
            .map(|(_, body)| body.clone())
    };
    let measured = backends(results);
    let mut body = String::new();
    for backend in Backend::ALL {
        let section = if measured.contains(&backend) {
            match backend {
                Backend::Postgres => postgres_section(results),
                Backend::Sqlite => sqlite_section(results),
            }
        } else {
            kept_section(backend.id()).unwrap_or_else(|| {
                format!(
                    "## {}\n\nNot measured yet: `scripts/bench --{} --write docs/BENCHMARKS.md`.\n",
                    backend.label(),
                    backend.id()
                )
            })
        };
        let _ = write!(
            body,
            "{}\n{}{}\n\n",
            begin_marker(backend.id()),
            section,
            end_marker(backend.id())
        );
        if backend == Backend::Sqlite {
            if let Some(notes) = kept_section(SQLITE_NOTES) {
                write_kept(&mut body, SQLITE_NOTES, &notes);
            }
        }
    }
    body.push_str(&other_hand_written(&kept));
    Ok(format!(
        r#"# Benchmarks

<!-- Generated by es-bench (`scripts/bench --write docs/BENCHMARKS.md`): edit benches/src/report.rs, not this file. A run rewrites the sections of the stores it measured and keeps the others as they were. -->

es-rs measured on both of its stores, each against a raw baseline doing the minimum SQL for the
same work on the same store, with the same domain (a bank account: `AccountOpened`, and
`MoneyDeposited` whose schema version 1 is upcast to 2):

- [PostgreSQL](#postgresql): es-rs on `es_postgres::PostgresStore` against the most used Rust
  peer (`cqrs-es` 0.5 with `postgres-es` 0.5) and raw sqlx, on one server;
- [SQLite](#sqlite): es-rs on `es_sqlite::SqliteStore` against raw rusqlite, on files of the
  same kind with the same SQLite library and settings.

The code is the `es-bench` crate in `benches/`; `cargo test --workspace` builds it and runs
every scenario once at a tiny size. Each section says when, where and with which command its
figures were measured: the two stores need not have been measured in the same run.

{body}## How the figures are made

Every (scenario, implementation) run is a separate process: it connects (or opens its file),
warms up on the same operation (untimed), measures, and reports its peak memory. The
implementations of a scenario run back to back, in an order that rotates per repetition. Every
run's result carries a check (the folded state, or the count and sum of the events read; on
SQLite also the settings of the connection that writes) that must be identical for the
implementations of the scenario, or the benchmark fails.

Targets (from the issues) are judged on the medians of the run, es-rs against the raw baseline
of the same store, except where a section says otherwise.

## Reproduce

```sh
scripts/bench                  # prints the tables; uses DATABASE_URL, or starts a throwaway server
scripts/bench --quick          # fewer repetitions
scripts/bench --only 3a,3c     # some scenarios
scripts/bench --sqlite         # only the SQLite scenarios (s1a, s3a, s4b, s5): no PostgreSQL needed
scripts/bench --write docs/BENCHMARKS.md   # rewrites the sections of the stores measured
scripts/bench --nats --repetitions 3        # es-nats against raw async-nats, 1 and 3 nodes (by hand above)
```
"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_found_by_their_markers() {
        let doc = "# Title\n\n<!-- es-bench:begin postgres -->\n## PostgreSQL\n\nfigures\n\
                   <!-- es-bench:end postgres -->\n\n<!-- es-bench:begin sqlite-notes (by hand) -->\nnotes\n\
                   <!-- es-bench:end sqlite-notes -->\n";
        let found = sections(doc).expect("well formed");
        assert_eq!(
            found,
            vec![
                ("postgres".to_owned(), "## PostgreSQL\n\nfigures\n".to_owned()),
                ("sqlite-notes".to_owned(), "notes\n".to_owned()),
            ]
        );
        assert!(sections("# Title\n").expect("no sections").is_empty());
    }

    #[test]
    fn hand_written_sections_of_other_binaries_are_kept() {
        let doc = "<!-- es-bench:begin postgres -->\nfigures\n<!-- es-bench:end postgres -->\n\
                   <!-- es-bench:begin contention (by hand) -->\n| table |\n<!-- es-bench:end contention -->\n";
        let kept = other_hand_written(&sections(doc).expect("well formed"));
        assert_eq!(
            sections(&kept).expect("well formed"),
            vec![("contention".to_owned(), "| table |\n".to_owned())]
        );
    }

    #[test]
    fn a_section_without_its_end_is_refused_rather_than_dropped() {
        let doc = "<!-- es-bench:begin postgres -->\n## PostgreSQL\n<!-- es-bench:end sqlite -->\n";
        assert!(sections(doc).is_err());
    }
}
