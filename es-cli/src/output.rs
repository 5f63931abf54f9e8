//! How commands print: aligned text for people, JSON for scripts, and the exit codes.

use std::io::{self, Write};
use std::process::ExitCode;

use serde_json::Value;

/// How a command ended: the process's exit code, which scripts can rely on. `--help` ends with
/// the same table.
///
/// | code | meaning |
/// |---|---|
/// | 0 | done |
/// | 1 | done, and problems were found (`doctor`), or the command failed (e.g. a state that does not load) |
/// | 2 | the command line is wrong (a usage error: an unknown option, a stream not written `type/id`, a reversed range) |
/// | 3 | what was asked for does not exist (the store, a stream, a version past a stream's last, an aggregate type, a projection) |
/// | 4 | the store failed or cannot be reached |
/// | 5 | the projection is busy: a runner holds it |
/// | 130 | interrupted (Ctrl-C): `log --follow`, `serve` and `rebuild` end this way; what was committed stays consistent |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// Done.
    Ok,
    /// Problems found, or the command failed.
    Problems,
    /// The command line is wrong.
    Usage,
    /// What was asked for does not exist.
    NotFound,
    /// The store failed or cannot be reached.
    Store,
    /// The projection is held by a runner.
    Busy,
    /// Interrupted by Ctrl-C.
    Interrupted,
}

impl Exit {
    /// Every exit, in the order of their codes.
    const ALL: [Self; 7] = [
        Self::Ok,
        Self::Problems,
        Self::Usage,
        Self::NotFound,
        Self::Store,
        Self::Busy,
        Self::Interrupted,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Problems => 1,
            Self::Usage => 2,
            Self::NotFound => 3,
            Self::Store => 4,
            Self::Busy => 5,
            Self::Interrupted => 130,
        }
    }

    /// What the code means to an operator: the table above, one row.
    fn meaning(self) -> &'static str {
        match self {
            Self::Ok => "done",
            Self::Problems => {
                "done, and problems were found (`doctor`), or the command failed (e.g. a state that does not load)"
            }
            Self::Usage => {
                "the command line is wrong (a usage error: an unknown option, a stream not written `type/id`, a \
                 reversed range)"
            }
            Self::NotFound => {
                "what was asked for does not exist (the store, a stream, a version past a stream's last, an \
                 aggregate type, a projection)"
            }
            Self::Store => "the store failed or cannot be reached",
            Self::Busy => "the projection is busy: a runner holds it",
            Self::Interrupted => {
                "interrupted (Ctrl-C): `log --follow`, `serve` and `rebuild` end this way; what was committed stays consistent"
            }
        }
    }
}

/// The exit codes, as the end of `--help` lists them.
pub(crate) fn exit_codes_help() -> String {
    let mut help = String::from("Exit codes:\n");
    for exit in Exit::ALL {
        help.push_str(&format!("  {:<4} {}\n", exit.code(), exit.meaning()));
    }
    help
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// A failed command: how to exit, and what to tell the user.
#[derive(Debug)]
pub(crate) struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }

    pub fn store(error: impl std::fmt::Display) -> Self {
        Self::new(Exit::Store, error.to_string())
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Self::new(Exit::Problems, format!("cannot write the output: {error}"))
    }
}

/// Where a command prints, and in which form.
pub(crate) struct Output<'w> {
    pub json: bool,
    pub out: &'w mut (dyn Write + Send),
}

impl Output<'_> {
    /// Prints `value` as one pretty JSON document.
    pub fn json(&mut self, value: &Value) -> Result<(), Failure> {
        serde_json::to_writer_pretty(&mut *self.out, value)
            .map_err(|error| Failure::new(Exit::Problems, error.to_string()))?;
        writeln!(self.out)?;
        Ok(())
    }

    /// Prints `value` as one JSON line.
    pub fn json_line(&mut self, value: &Value) -> Result<(), Failure> {
        serde_json::to_writer(&mut *self.out, value)
            .map_err(|error| Failure::new(Exit::Problems, error.to_string()))?;
        writeln!(self.out)?;
        self.out.flush()?;
        Ok(())
    }

    /// Prints a line of text.
    pub fn line(&mut self, text: impl AsRef<str>) -> Result<(), Failure> {
        writeln!(self.out, "{}", text.as_ref())?;
        Ok(())
    }

    /// Prints rows under headers, each column as wide as its widest cell.
    pub fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) -> Result<(), Failure> {
        let mut widths: Vec<usize> = headers.iter().map(|header| header.chars().count()).collect();
        for row in rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let render = |cells: &mut dyn Iterator<Item = &str>| {
            let padded: Vec<String> = cells
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            padded.join("  ").trim_end().to_owned()
        };
        let header_line = render(&mut headers.iter().copied());
        self.line(header_line)?;
        for row in rows {
            let line = render(&mut row.iter().map(String::as_str));
            self.line(line)?;
        }
        Ok(())
    }
}

/// `value` as indented JSON text, for people.
pub(crate) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// The stored bytes of a payload as JSON, or as a string when they are not JSON.
pub(crate) fn stored_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::Exit;

    /// The help's table and the rustdoc's are one table: each row of one is a row of the other.
    #[test]
    fn the_help_lists_the_exit_codes_of_the_rustdoc() {
        let source = include_str!("output.rs");
        let help = super::exit_codes_help();
        for exit in Exit::ALL {
            let row = format!("/// | {} | {} |", exit.code(), exit.meaning());
            assert!(source.contains(&row), "the rustdoc lacks: {row}");
            assert!(help.contains(exit.meaning()), "{help}");
        }
        let documented = source
            .lines()
            .filter(|line| line.starts_with("/// | ") && !line.starts_with("/// | code"))
            .count();
        assert_eq!(documented, Exit::ALL.len(), "every documented code is an exit");
    }
}
