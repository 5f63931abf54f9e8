//! Why a target was not met: for each scenario whose target a run missed, what stands between
//! es-rs and the target, and what would move it. The report prints these under the tables.

use crate::scenario::{Backend, Scenario};

/// What keeps `scenario` from its target, and what would move it: what the measurements of
/// this benchmark (and `benches/floor`) found, not a guess.
fn reason(scenario: Scenario) -> Option<&'static str> {
    Some(match scenario {
        Scenario::NewSequential | Scenario::NewConcurrent => {
            "Both sides make one round trip and one commit per command, without a read before \
             the write (`Repository::create`: one `INSERT ... SELECT` guarded by the unique \
             constraint). The rest is the server's work on what es-rs stores and checks. \
             `benches/floor/run.sh` measures it with pgbench, no client code: on this machine \
             (2026-12-05, medians of 5 rounds) the raw row took 0.257 ms, es-rs's row as a plain \
             `INSERT ... VALUES` 0.286 ms (0.90x: the event id under a third unique index, the \
             aggregate type and id apart, three metadata ids and a timestamp), and the \
             statement es-rs runs (its expected-version condition, `RETURNING`, and the \
             closed-stream probe of the stream lifecycle) 0.307 ms: 0.84x raw before any client \
             code. The target, 0.9x, is below that floor. Client CPU (ids, encoding, the \
             metrics and tracing of a command) adds the rest, and in 1b competes with the \
             server for the two cores. What would \
             move it: a narrower row, i.e. dropping the event-id index (and with it appends \
             recognised by event id, and reads by id), the metadata columns or the \
             closed-stream check: guarantees the store keeps on purpose."
        }
        Scenario::BatchLarge => {
            "Both sides insert the batch with one `INSERT ... SELECT FROM unnest(...)`, and the \
             command's metadata is sent once. The server's work on es-rs's row is the floor: \
             `benches/floor/run.sh` inserts the same 10,000 events server-side, no client: on \
             this machine (2026-12-05, medians of 5 rounds) 44 ms with the raw row, 87 ms with \
             es-rs's row (1.98x, above the 1.3x target before any client code), and still 76 \
             ms (1.72x) with the event-id index dropped: the wider row (the aggregate type and \
             id apart, in the `(aggregate_type, aggregate_id, version)` index too, three \
             metadata ids, a timestamp) costs more than the index. es-rs's client adds little \
             to that floor (ids derived from the command with one SHA-1 prefix per batch, the \
             limits check). What would move it: a narrower row (see 1a), or bulk import (7), \
             whose `COPY` skips the statement, for loads of this size."
        }
        Scenario::ReadAll => {
            "Both sides read with one streamed query. es-rs reads and hands out the whole \
             envelope a projection is given (event id, aggregate type and id, version, \
             timestamp, metadata: 14 columns to the raw baseline's 6), and merges the hot table \
             with the archive of the stream lifecycle. Measured on 100,000 events on this \
             machine (2026-12-05, a program streaming the rows with sqlx): es-rs's rows, \
             received and not decoded, take 110 ms, and the raw baseline's 75 ms; each column \
             costs 3-6 ms on the server and the wire, the merge with the archive 3 ms. Decoded, \
             the whole read takes 113-118 ms for es-rs and 73-77 ms for the raw baseline; \
             es-rs's client CPU is 89 ms of it (105 ms before its decoders read the bytes in \
             place), so the rows' transfer is what limits it, and no decoder takes this \
             envelope past about 0.68x raw. What would move it: a read that selects only \
             the columns its caller asks for (a projection that needs no metadata), or fewer \
             columns in the row itself (see 1a)."
        }
        Scenario::LoadLarge | Scenario::Load => {
            "Both sides read the stream with one query on the `(stream, version)` index and \
             fold each row as it arrives; es-rs selects only version, name, schema version and \
             payload. But its rows are wider (scenario 9), so the index scan visits about 1.5x \
             the heap pages for the same events. Since 2026-12-05 the run analyzes the seeded \
             schemas first; the raw baseline's load of 100,000 events took 69-88 ms after that \
             and 74-112 ms in the runs before, es-rs's 81-88 ms in both. What would move it: a \
             narrower row (see 1a)."
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
        Scenario::Upcast => {
            "For a current-version event both types run the same steps: its name matched \
             against the enum's, then `serde_json::from_slice` into the struct. The type with an \
             upcaster also has the arms of its older versions in the same function; they run \
             out of line (`#[cold]`, never inlined) so that their steps' unwinding does not \
             weigh on the current version's path. Inlined, they cost 8-10% (0.90-0.92 in three \
             runs of 2026-12-05, 1.00-1.01 once out of line). What would move it: a look at the \
             generated `decode_payload` of both types in the release build."
        }
        Scenario::SqliteNewSequential | Scenario::SqliteLoad | Scenario::SqliteBatchLarge | Scenario::SqliteReadAll => {
            "See \"Where the time goes on SQLite\" below, which measures each of these \
             scenarios' costs by hand."
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
