//! Why a target was not met: for each scenario whose target a run missed, what stands between
//! es-rs and the target, and what would move it. The report prints these under the tables.

use crate::scenario::{Backend, Scenario};

/// What keeps `scenario` from its target, and what would move it: what the measurements of
/// this benchmark (and `benches/floor`) found, not a guess.
fn reason(scenario: Scenario) -> Option<&'static str> {
    Some(match scenario {
        Scenario::NewSequential | Scenario::NewConcurrent => {
            "Both sides make one round trip and one commit per command, without a read before \
             the write (`Repository::create`; a plain `INSERT ... SELECT` guarded by the unique \
             constraint since this issue). What is left is the row: es-rs stores an event id \
             under a third unique index, the aggregate type and id apart, the command's metadata \
             (three ids) and a timestamp, none of which the raw row has (scenario 9). \
             `benches/floor/run.sh` measures the floor that leaves on the server with pgbench: \
             the same one-row insert with es-rs's row and with the raw row, no client code. The \
             rest is client CPU (ids, encoding, the metrics and tracing of a command), which in \
             1b competes for the two cores with the server. What would move it: a narrower \
             row, i.e. dropping the event-id index (and with it idempotent appends recognised \
             by id, and reads by id) or the metadata: guarantees the store keeps on purpose."
        }
        Scenario::BatchLarge => {
            "Both sides insert the batch with one `INSERT ... SELECT FROM unnest(...)`. \
             es-rs's rows are wider and keep three unique indexes to the raw baseline's two \
             (scenario 9: about twice the index bytes per event), and es-rs derives each \
             event's id from its command (a SHA-1) and checks the batch against its limits. The \
             metadata is sent once per batch, no longer once per event. What would move it: \
             the narrower row of 1a, or bulk import (7) for loads of this size."
        }
        Scenario::ReadAll => {
            "Both sides read with one streamed query. es-rs reads and hands out the whole \
             envelope a projection is given (event id, aggregate type and id, version, \
             timestamp, metadata), so the server reads and sends more bytes per event than the \
             raw baseline's four columns (scenario 9), and es-rs decodes through the event \
             registry (scenario 6: 0.8-0.9x the raw `match`). What would move it: a read that \
             selects only the columns its caller asks for."
        }
        Scenario::LoadLarge | Scenario::Load => {
            "Both sides read the stream with one query on the `(stream, version)` index and \
             fold each row as it arrives; es-rs selects only version, name, schema version and \
             payload. But its rows are wider (scenario 9), so the index scan visits about 1.5x \
             the heap pages for the same events. What would move it: a narrower row (see 1a)."
        }
        Scenario::BulkImport => {
            "es-rs keeps up with the raw `COPY` (the ratio target); the absolute one, 100,000 \
             events/s, is out of reach of both on this machine: the server's index maintenance \
             is the bottleneck. A server-side `COPY` of the same rows from a local file, no \
             client at all, took 3.0-3.3 s per million rows without indexes, 5.8-6.2 s with the \
             primary key and the event id, and 10.9-12.9 s with all three (80-90k rows/s): \
             the `(aggregate_type, aggregate_id, version)` index alone costs as much as the \
             rest. Both sides use the same server CPU per event. What would move it: a faster \
             core, or chunks written in parallel on several connections (which needs a \
             progress record per chunk, and more than two cores to pay)."
        }
        _ => return None,
    })
}

/// The "Targets not met" section of `backend`: one item per scenario whose target the run
/// missed, with its reason; empty when every target was met.
pub fn misses(backend: Backend, missed: &[Scenario]) -> String {
    let items: Vec<String> = missed
        .iter()
        .filter(|scenario| scenario.backend() == backend)
        .map(|&scenario| {
            let reason = reason(scenario).unwrap_or("Not analysed yet.");
            format!("- **{}**: {reason}", scenario.id())
        })
        .collect();
    if items.is_empty() {
        return String::new();
    }
    format!("\n### Targets not met, and why\n\n{}\n", items.join("\n"))
}

/// Scenarios whose figure needs explaining though they have no target: 2a, whose floor is set
/// by what it measures.
fn note(scenario: Scenario) -> Option<&'static str> {
    Some(match scenario {
        Scenario::Live => {
            "The floor is the replay itself. Without snapshots or a cache, command k loads \
             the k events before it, so n commands read about n²/2 events (2 million for 2,000), while \
             the raw baseline keeps its state in memory and reads none: the ratio falls as \
             the stream grows, whatever a replayed event costs. The cost per replayed event \
             is what 3a and 3c measure, and what this store lowers (one query on the stream's \
             index, four columns, rows decoded in place); the way past the quadratic cost is \
             2b (snapshots) or 2c (the state cache, which meets its target)."
        }
        _ => return None,
    })
}

/// The notes on the scenarios of `backend` among `measured` that have one.
pub fn notes(backend: Backend, measured: &[Scenario]) -> String {
    let items: Vec<String> = measured
        .iter()
        .filter(|scenario| scenario.backend() == backend)
        .filter_map(|&scenario| note(scenario).map(|note| format!("- **{}**: {note}", scenario.id())))
        .collect();
    if items.is_empty() {
        return String::new();
    }
    format!("\n### Notes\n\n{}\n", items.join("\n"))
}
