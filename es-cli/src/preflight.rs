//! What a command line asks of the store, read from its arguments before the store is opened.

use std::ffi::OsString;
use std::io::Write;

use clap::error::ErrorKind;
use clap::FromArgMatches;

use crate::args::{Args, Command};
use crate::output::Exit;
use crate::program::Program;

/// What the arguments of a command line ask of the store, known before the store is opened
/// ([`preflight`]): help needs no store at all, and looking at a store never changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preflight {
    /// Help, the version, or arguments that do not parse: answered already (printed as
    /// [`Cli::run_from`](crate::Cli::run_from) prints them), with this exit code. Open no store.
    Answered(Exit),
    /// A command that only reads: `streams`, `events`, `state`, `diff`, `log`, `projections`,
    /// `parked` without an action, `doctor`, `registry`, `closed`, `serve`. Open the store for
    /// reading only if it can be (`es_sqlite::SqliteStore::open_read_only`), and do not migrate
    /// it: then looking works beside a writer holding the store's lock, on a file the process
    /// may only read, and changes nothing.
    Reads,
    /// A command that writes: `rebuild`, `forget`, `close`, `parked --retry` or `--drop`. Open
    /// the store for writing, migrated.
    Writes,
}

/// Reads the command line `args` (the first is the program's name) before any store is
/// opened: answers help, the version and usage errors (printing to stdout and stderr), and
/// tells what the command asks of the store otherwise. Usage errors include what can be
/// checked without a store: a stream not written as `type/id`, `events --from` after `--to`.
/// [`Program::preflight`] does the same with the binary's own name, version and help.
///
/// ```no_run
/// use es_cli::{Cli, Preflight};
/// # use es_core::InMemoryStore;
/// # async fn open_store(_read_only: bool) -> InMemoryStore { InMemoryStore::new() }
///
/// # async fn demo() -> std::process::ExitCode {
/// let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
/// let read_only = match es_cli::preflight(&args) {
///     Preflight::Answered(exit) => return exit.into(),
///     Preflight::Reads => true,
///     _ => false,
/// };
/// let store = open_store(read_only).await;
/// Cli::new(store).run_from(args).await
/// # }
/// ```
pub fn preflight<I, T>(args: I) -> Preflight
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    preflight_with(&Program::default(), args)
}

/// [`preflight`] with `program`'s help and version ([`Program::preflight`]).
pub(crate) fn preflight_with<I, T>(program: &Program, args: I) -> Preflight
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match parse(program, args, &mut std::io::stdout(), &mut std::io::stderr()) {
        Err(exit) => Preflight::Answered(exit),
        Ok(args) => match args.command {
            Command::Rebuild { .. } | Command::Forget { .. } | Command::Close { .. } => Preflight::Writes,
            Command::Parked { retry, drop, .. } if retry.is_some() || drop.is_some() => Preflight::Writes,
            _ => Preflight::Reads,
        },
    }
}

/// Parses `args`; help and the version are printed to `out` (exit 0), a usage error to `err`.
/// Every check that needs no store is made here (a stream written as `type/id`, a version range
/// in order), so that a wrong command line is a usage error before any store is opened.
pub(crate) fn parse<I, T>(
    program: &Program,
    args: I,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<Args, Exit>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = program.command();
    let parsed = command
        .try_get_matches_from_mut(args)
        .and_then(|matches| Args::from_arg_matches(&matches))
        .and_then(|args| match misordered(&args.command) {
            Some(message) => Err(command.error(ErrorKind::ArgumentConflict, message)),
            None => Ok(args),
        });
    parsed.map_err(|error| match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = write!(out, "{}", error.render());
            Exit::Ok
        }
        _ => {
            let _ = write!(err, "{}", error.render());
            Exit::Usage
        }
    })
}

/// What is wrong with a command's version range, if anything.
fn misordered(command: &Command) -> Option<String> {
    match command {
        Command::Events {
            from: Some(from),
            to: Some(to),
            ..
        } if from > to => Some(format!(
            "--from {from} is after --to {to}: give the earlier version first"
        )),
        _ => None,
    }
}
