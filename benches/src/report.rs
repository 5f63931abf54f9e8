//! The markdown: the results table, the memory table, and `docs/BENCHMARKS.md`.

use std::fmt::Write;

use crate::run::Results;
use crate::scenario::{group_digits, Better, Implementation, Metric, Scenario, Target};
use crate::stats::Spread;

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

fn verdict(target: Option<Target>, ratio: Option<f64>) -> (String, String) {
    match (target, ratio) {
        (Some(target), Some(ratio)) => (
            target.to_string(),
            if target.met(ratio) {
                "met".to_owned()
            } else {
                "**not met**".to_owned()
            },
        ),
        (Some(target), None) => (target.to_string(), "–".to_owned()),
        (None, _) => (String::new(), String::new()),
    }
}

/// The ratio a metric's target is judged on.
fn target_ratio(results: &Results, scenario: Scenario, metric: &Metric) -> Option<f64> {
    let ours = spread(results, scenario, Implementation::Ours, metric.key);
    match metric.target? {
        Target::AtLeastRaw(_) | Target::AtMostRaw(_) => {
            ratio(ours, spread(results, scenario, Implementation::Raw, metric.key))
        }
        Target::AtLeast(_) => ours.map(|ours| ours.median),
    }
}

/// The results table: one row per metric, each implementation's median with its range over the
/// repetitions, and the ratios.
pub fn results_table(results: &Results) -> String {
    let mut out = String::new();
    out.push_str(
        "| Scenario | Metric | es-rs | cqrs-es | raw sqlx | es-rs / cqrs-es | es-rs / raw | cqrs-es / raw \
         | Target (es-rs) | |\n",
    );
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|---|---|\n");
    for &scenario in &results.options.scenarios {
        for (i, metric) in scenario.metrics().iter().enumerate() {
            let title = if i == 0 {
                scenario.title(&results.options.sizes)
            } else {
                String::new()
            };
            let [ours, peer, raw] =
                Implementation::ALL.map(|implementation| spread(results, scenario, implementation, metric.key));
            let arrow = match metric.better {
                Better::Higher => "↑",
                Better::Lower => "↓",
            };
            let (target, met) = verdict(metric.target, target_ratio(results, scenario, metric));
            let _ = writeln!(
                out,
                "| {title} | {} {arrow} | {} | {} | {} | {} | {} | {} | {target} | {met} |",
                metric.label,
                figure(ours),
                figure(peer),
                figure(raw),
                ratio_cell(ratio(ours, peer).filter(|_| metric.compare)),
                ratio_cell(ratio(ours, raw).filter(|_| metric.compare)),
                ratio_cell(ratio(peer, raw).filter(|_| metric.compare)),
            );
        }
    }
    out
}

/// The memory table: each run's peak resident memory (MiB), median and range.
pub fn memory_table(results: &Results) -> String {
    let mut out = String::new();
    out.push_str("| Scenario | es-rs | cqrs-es | raw sqlx | es-rs / raw | cqrs-es / raw | Target (es-rs) | |\n");
    out.push_str("|---|--:|--:|--:|--:|--:|---|---|\n");
    for &scenario in &results.options.scenarios {
        let [ours, peer, raw] = Implementation::ALL.map(|implementation| memory(results, scenario, implementation));
        let to_raw = ratio(ours, raw);
        let (target, met) = match scenario.memory_target() {
            Some(most) => (
                format!("≤ {most:.2}x raw"),
                match to_raw {
                    Some(value) if value <= most => "met".to_owned(),
                    Some(_) => "**not met**".to_owned(),
                    None => "–".to_owned(),
                },
            ),
            None => (String::new(), String::new()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {target} | {met} |",
            scenario.id(),
            figure(ours),
            figure(peer),
            figure(raw),
            ratio_cell(to_raw),
            ratio_cell(ratio(peer, raw)),
        );
    }
    out
}

/// Both tables with their legends: what the benchmark prints.
pub fn tables(results: &Results) -> String {
    format!(
        "### Throughput and latency\n\n\
         Median over {reps} repetition(s), with the range (min–max) in small print. ↑: more is \
         better; ↓: less is better. Ratios divide medians: for ↑ rows above 1x means faster than the \
         other, for ↓ rows below 1x does.\n\n{}\n\
         ### Peak memory (MiB)\n\n\
         Peak resident set size (`VmHWM`) of the process that ran the measurement, one process per \
         run, including the runtime, the connection pool and the warm-up.\n\n{}",
        results_table(results),
        memory_table(results),
        reps = results.options.sizes.repetitions,
    )
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

/// `docs/BENCHMARKS.md`.
pub fn document(results: &Results) -> String {
    let sizes = &results.options.sizes;
    let machine = &results.machine;
    let server = &results.server;
    let mut settings = String::new();
    for (name, value) in &server.settings {
        let _ = write!(settings, "`{name}` = `{value}`, ");
    }
    let settings = settings.trim_end_matches([',', ' ']);
    let durability = match (server.setting("fsync"), server.setting("synchronous_commit")) {
        (Some("on"), Some("on")) => "Default durability: `fsync` and `synchronous_commit` are on.",
        _ => "**Not the default durability**: see `fsync` and `synchronous_commit` above.",
    };
    format!(
        r#"# Benchmarks

<!-- Generated by `{command}`: edit benches/src/report.rs, not this file. -->

This framework (es-rs: `es_core::Repository` on `es_postgres::PostgresStore`) against the most
used Rust peer (`cqrs-es` 0.5 with `postgres-es` 0.5) and a raw sqlx baseline doing the minimum
SQL for the same work, measured in one run, on one PostgreSQL server, with the same domain (a
bank account: `AccountOpened`, and `MoneyDeposited` whose schema version 1 is upcast to 2).
The code is the `es-bench` crate in `benches/`; `cargo test --workspace` builds it and runs
every scenario once at a tiny size.

## The run

- Command: `{command}` ({sizes_name} sizes, {reps} repetitions, took {elapsed:.0} s)
- Started: {started}
- Machine: {cpus} CPUs ({cpu_model}), {memory} memory, Linux {kernel}; load average
  (1/5/15 min) {load_before} before the run, {load_after} after, highest 1-minute load seen
  during the run {load_peak:.2}.{shared}
- Server: {database}
- PostgreSQL: {version}
- Settings: {settings}. {durability}
- Toolchain: {rustc}, {profile} profile
- Code: {revision}

## Results

{tables}
## What each implementation does

- **es-rs**: the domain is written with `#[event]` (with a JSON upcaster for `MoneyDeposited`
  v1) and `#[derive(Aggregate)]`. Commands on new aggregates (1, 4) go through
  `Repository::create` (decide on the default state, append expecting no stream); commands on
  a live aggregate (2) through `Repository::execute` (load, decide, append with the loaded
  version as the expected version), with `Repository::with_snapshot_every` in 2b and
  `Repository::with_cache` in 2c; loads through `Repository::load` (from the snapshot in 3b);
  the global read pages through `GlobalLog::read_all` with the projection runner's default
  page size ({page}) and decodes each event. The store comes from `PostgresStore::connect`,
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

Every (scenario, implementation) run is a separate process: it connects, warms up on the same
operation (untimed), measures, and reports its peak memory. Writing scenarios get a fresh
schema each; reading scenarios (3, 5) use data each implementation seeded through its own
write path before the repetitions. The three implementations run back to back for each
scenario, in an order that rotates per repetition. Every run's result carries a check (the
folded state, or the count and sum of the events read) that must be identical for the three
implementations, or the benchmark fails. Scenario 6 is CPU only: the stored events are built
in memory in each implementation's format and decoded through its own load path (es-rs:
`EventSet::decode`; cqrs-es: `PersistedEventStore::load_events` over an in-memory repository
that maps stored bytes to `SerializedEvent`s as postgres-es does; raw: a `match` and serde):
all of them with the upcaster registered, and the current-version half (the same events in
memory) both with the upcaster registered and without any.

Targets (from the issue) are judged on the medians of this run, es-rs against raw sqlx; the
upcasting target compares es-rs with itself: in each pass the current-version half is decoded
with the upcaster registered and with a type that has none, back to back in alternating order;
the figure is the median over the passes of the ratio of the two speeds, and may fall 5% short
of 1: the raw baseline's two decoders do identical work on these events (its "upcaster" is a
`match` arm that current-version events never reach), and their ratio, shown as a control,
still moves by that much from one build to the next (code layout).

## Reproduce

```sh
scripts/bench                  # prints the tables; uses DATABASE_URL, or starts a throwaway server
scripts/bench --quick          # fewer repetitions
scripts/bench --only 3a,3c     # some scenarios
scripts/bench --write docs/BENCHMARKS.md
```
"#,
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
        database = results.database,
        version = server.version,
        rustc = results.rustc,
        revision = results.revision,
        profile = if cfg!(debug_assertions) { "debug" } else { "release" },
        page = sizes.read_all_page,
        tables = tables(results),
    )
}
