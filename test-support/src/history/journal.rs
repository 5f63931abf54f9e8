//! [`Journal`]: a history on disk, written line by line as attempts start and end, so that a
//! writer process killed at any moment leaves behind what it attempted.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use es_core::StreamId;
use uuid::Uuid;

use super::{Attempt, Batch, Outcome};

/// A history file: one line when an attempt starts (its batch) and one when it is answered (its
/// outcome), tab-separated, each written with a single `write` on a file opened for appending,
/// so a process killed between the two leaves the first line only (read back as
/// [`Outcome::Unknown`]), and never half a line that matters. Several processes may use one
/// file: lines name their process.
///
/// Made by [`History::journaled`](super::History::journaled), read by
/// [`History::load_journal`](super::History::load_journal).
#[derive(Debug)]
pub struct Journal {
    file: Mutex<File>,
    process: u32,
}

/// What an attempt whose answer is not in the journal counts as.
const DIED: &str = "the writer process died before it heard the answer";

impl Journal {
    /// Creates the file at `path`, or opens it to append.
    pub(super) fn create(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Mutex::new(file),
            process: std::process::id(),
        })
    }

    /// Writes the start of attempt `index`: `A <process>.<index> <type> <id> <event ids>`.
    pub(super) fn attempt(&self, index: usize, batch: &Batch) -> io::Result<()> {
        let ids: Vec<String> = batch.event_ids.iter().map(Uuid::to_string).collect();
        let line = format!(
            "A\t{}.{index}\t{}\t{}\t{}\n",
            self.process,
            clean(&batch.stream.aggregate_type),
            clean(&batch.stream.aggregate_id),
            ids.join(",")
        );
        self.write(&line)
    }

    /// Writes the outcome of attempt `index`: `O <process>.<index> <kind> <details>`.
    pub(super) fn outcome(&self, index: usize, outcome: &Outcome) -> io::Result<()> {
        let (kind, details) = match outcome {
            Outcome::Ok {
                first_version,
                positions,
            } => {
                let positions: Vec<String> = positions.iter().map(u64::to_string).collect();
                ("ok", format!("{first_version}\t{}", positions.join(",")))
            }
            Outcome::Conflict => ("conflict", String::new()),
            Outcome::Failed(reason) => ("failed", clean(reason)),
            Outcome::Unknown(reason) => ("unknown", clean(reason)),
        };
        self.write(&format!("O\t{}.{index}\t{kind}\t{details}\n", self.process))
    }

    fn write(&self, line: &str) -> io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // One write: a process killed during it leaves the line whole or not at all, in
        // practice, for a line this short on a local file.
        file.write_all(line.as_bytes())
    }
}

/// Tabs and line breaks would break the format.
fn clean(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

/// The attempts of the journal at `path`, in the order they started.
pub(super) fn read(path: &Path) -> io::Result<Vec<Attempt>> {
    let text = std::fs::read_to_string(path)?;
    // A line without its line break was cut short by a kill during its write: as if unwritten.
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (number, line) in whole.lines().enumerate() {
        let invalid = || io::Error::new(io::ErrorKind::InvalidData, format!("line {}: {line}", number + 1));
        match line.split('\t').collect::<Vec<&str>>().as_slice() {
            ["A", key, aggregate_type, aggregate_id, ids] => {
                let event_ids = ids
                    .split(',')
                    .filter(|id| !id.is_empty())
                    .map(|id| id.parse::<Uuid>().map_err(|_| invalid()))
                    .collect::<io::Result<Vec<Uuid>>>()?;
                index.insert((*key).to_owned(), attempts.len());
                attempts.push(Attempt {
                    batch: Batch {
                        stream: StreamId::new(*aggregate_type, *aggregate_id),
                        event_ids,
                    },
                    outcome: Outcome::Unknown(DIED.into()),
                });
            }
            ["O", key, kind, details @ ..] => {
                let outcome = parse_outcome(kind, details).ok_or_else(invalid)?;
                let at = *index.get(*key).ok_or_else(invalid)?;
                attempts[at].outcome = outcome;
            }
            _ => return Err(invalid()),
        }
    }
    Ok(attempts)
}

fn parse_outcome(kind: &str, details: &[&str]) -> Option<Outcome> {
    let detail = || details.first().map_or_else(String::new, |detail| (*detail).to_owned());
    match kind {
        "ok" => {
            let [first_version, positions] = details else {
                return None;
            };
            let positions = positions
                .split(',')
                .filter(|position| !position.is_empty())
                .map(str::parse)
                .collect::<Result<Vec<u64>, _>>()
                .ok()?;
            Some(Outcome::Ok {
                first_version: first_version.parse().ok()?,
                positions,
            })
        }
        "conflict" => Some(Outcome::Conflict),
        "failed" => Some(Outcome::Failed(detail())),
        "unknown" => Some(Outcome::Unknown(detail())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;

    #[test]
    fn a_journal_reads_back_as_the_history_it_recorded_and_an_unanswered_attempt_is_unknown() {
        let dir = std::env::temp_dir().join(format!("es-journal-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let path = dir.join("journal");
        let written = History::journaled(&path).expect("journal");
        let stream = StreamId::new("case", "c\t1");
        let batch = |n| Batch {
            stream: stream.clone(),
            event_ids: (0..n).map(|_| Uuid::now_v7()).collect(),
        };
        let (first, second, third) = (batch(2), batch(1), batch(3));
        written.record(
            &first,
            Outcome::Ok {
                first_version: 1,
                positions: vec![4, 5],
            },
        );
        written.record(&second, Outcome::Failed("no\tway".into()));
        let pending = written.attempt(&third);
        std::mem::forget(pending); // as if the process died here

        let read = History::new();
        assert_eq!(read.load_journal(&path).expect("read"), 3);
        let attempts = read.attempts();
        assert_eq!(attempts[0].outcome, written.attempts()[0].outcome);
        assert_eq!(attempts[1].outcome, Outcome::Failed("no way".into()));
        assert_eq!(attempts[2].outcome, Outcome::Unknown(DIED.into()));
        assert_eq!(attempts[2].batch.event_ids, third.event_ids);
        assert_eq!(attempts[0].batch.stream, StreamId::new("case", "c 1"));

        // A line cut short by a kill is the end of the journal, not an error.
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(b"A\t1.9\tcase\tc-2\t0193").expect("write");
        assert_eq!(History::new().load_journal(&path).expect("read"), 3);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
