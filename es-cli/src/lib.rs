//! The command line an application embeds to look at its event store: list streams, show
//! events, time-travel an aggregate's state, tail the global log, watch and rebuild projections,
//! and check that every stored event still decodes.
//!
//! It needs the application's own types (to decode events and fold states), so it is a library:
//! the application builds a binary of its own in a few lines, on whichever store it uses.
//!
//! ```no_run
//! use es_cli::Cli;
//! # use es_core::{event, Aggregate, Apply, InMemoryStore};
//! # use serde::{Deserialize, Serialize};
//! # #[event] #[derive(Debug)] pub struct Opened;
//! # #[event] #[derive(Debug)] pub enum TicketEvent { Opened(Opened) }
//! # #[derive(Default, Serialize, Deserialize, Aggregate)]
//! # #[aggregate(name = "ticket", event = TicketEvent)]
//! # pub struct Ticket;
//! # impl Apply<Opened> for Ticket { fn apply(&mut self, _: &Opened) {} }
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     let store = InMemoryStore::new(); // or an es_sqlite::SqliteStore, an es_postgres::PostgresStore
//!     let cli = match Cli::new(store).aggregate::<Ticket>() {
//!         Ok(cli) => cli,
//!         Err(error) => {
//!             eprintln!("{error}");
//!             return std::process::ExitCode::FAILURE;
//!         }
//!     };
//!     // .projection(runner) for each projection to watch and rebuild
//!     // .program(Program::new("tickets-admin", "2.3.0").store_help(...)) for its own help
//!     cli.run().await
//! }
//! ```
//!
//! A binary that opens its store according to the command (read-only for the commands that only
//! look) reads the arguments with [`preflight`] (or [`Program::preflight`]) first; a binary that
//! chooses its store with options of its own before the command (`--db PATH`) says so in its
//! [`Program`], which `--help` shows with the exit codes.
//!
//! Then, for example:
//!
//! ```text
//! es streams --type ticket             # streams, event counts, last activity
//! es events ticket/T-1                 # the events with their metadata and payloads
//! es state ticket/T-1 --version 3      # the state after version 3 (or --at 2026-12-04T10:00:00Z)
//! es diff ticket/T-1 2 5               # what changed between two versions
//! es log --follow                      # the global log, as events are committed
//! es log --name TicketEscalated        # an audit: one kind of event, across streams
//! es projections                       # checkpoints, lag, whether a runner holds each
//! es rebuild lead-search               # replay every event into a read model, with progress
//! es doctor                            # decode every stored event and snapshot
//! es registry                          # aggregate types, event names, aliases, versions
//! es serve --port 8080                 # a read-only web event browser on 127.0.0.1
//! es forget lead/L-7 --yes             # destroy a data subject's key (with `Cli::forgetting`)
//! es close ticket/T-9 --as deleted --by dpo --reason "erasure #42" --yes   # (with `Cli::closing`)
//! es closed --status deleted           # the audit of deletions
//! ```
//!
//! `es serve` prints `listening on http://127.0.0.1:PORT` as its first line (`--port 0` takes
//! any free port) and serves until Ctrl-C (then exits with 130), on 127.0.0.1 only. Its pages,
//! all read-only (no route writes; other methods are answered 405):
//!
//! - `/`: the streams, searched by aggregate type and id prefix, 50 a page (`?limit=` up to
//!   500);
//! - `/streams/TYPE/ID`: a stream's events with their metadata and payloads, as the current
//!   code reads them and as stored when that differs or does not decode, 50 versions a page;
//! - `/streams/TYPE/ID/state?version=N`: the aggregate's state after version N (0 to the
//!   stream's last; past it, 404 naming the last), the event that led to it and what it
//!   changed, with links to the previous and next versions;
//! - `/log`: the latest 50 events of the global log, with rows added as events are committed
//!   (the page polls `/log.json?after=POS` every second, which answers at most 500 events at a
//!   time), and earlier and later pages of 50;
//! - `/projections`: each projection's checkpoint, lag and claim.
//!
//! Every request does bounded work (a page of the catalog, a slice of a stream, a page of the
//! log, read backwards in windows of at most 3,200 positions), so the pages stay fast on a large
//! store; the one exception is inherent: the state at version N folds the stream's first N
//! events. Everything read from the store is escaped, and the pages run only their own script.
//! [`Cli::into_router`] gives the same pages as an axum router, to serve within an application's
//! own server.
//!
//! **Rows that cannot be read.** A stored row the store cannot turn into an event (metadata
//! that is not JSON, written behind the framework's back or damaged) does not stop the
//! commands and pages that look: `events`, `log` and the browser show it in its place, marked
//! as unreadable with the store's reason, and go on; `doctor` reports it with the events that
//! do not decode; `projections` lists a projection whose next event is such a row with its lag
//! in events (its lag in seconds unknown), names the row and exits 1. A state is folded from the events' names and payloads alone, as loading an
//! aggregate is: a row whose metadata alone is damaged still folds, and one whose payload does
//! not decode fails the state, naming it.
//!
//! **Events not in the log yet.** On PostgreSQL the global log holds back events committed
//! while an older write transaction is still open anywhere in the cluster. `doctor` waits for
//! such events to join the log (`--wait`, 10 s), then names how many it could not check (JSON:
//! `events_not_checked`) and exits 1: never an all-clear over events it did not see.
//!
//! **Ranges.** A version past a stream's last (`state --version`, `diff`, `events --from`, the
//! browser's `state?version=`) is not found (exit 3, 404), naming the stream's last version;
//! `events --from` after `--to` is a usage error. `--to` past the last, and `--at` after the
//! last event, mean the last.
//!
//! Every command has `--help`. Output is text for people; `--json` prints JSON for scripts.
//! Long commands show progress bars on a terminal and plain lines otherwise. The exit codes are
//! listed at [`Exit`], and at the end of `--help`. `log --follow`, `serve` and `rebuild` end on
//! Ctrl-C with 130; the handler is installed before they print anything.

#![warn(missing_docs)]

mod args;
mod closing;
mod commands;
mod diff;
mod interrupt;
mod long;
mod output;
mod parked;
mod preflight;
mod program;
mod projections;
mod rows;
mod serve;
mod state;
mod views;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use es_core::lifecycle::ClosedStream;
use es_core::pii::{ForgetSubjects, ForgottenSubject};
use es_core::{
    Aggregate, CheckpointStore, EventRegistry, EventStore, GlobalLog, Projection, ProjectionRunner, RegistryError,
    SnapshotStore, StoreResult, StreamCatalog,
};
use futures_util::future::BoxFuture;

pub use output::Exit;
pub use preflight::{preflight, Preflight};
pub use program::Program;

use args::Command;
use interrupt::Interrupt;
use output::{Failure, Output};
use views::{AggregateView, ProjectionView, Typed};

/// What a store must offer the command line: streams, the global log, snapshots and the
/// catalog of streams. Every store of this workspace does.
pub trait CliStore: EventStore + GlobalLog + SnapshotStore + StreamCatalog + Clone + 'static {}

impl<S: EventStore + GlobalLog + SnapshotStore + StreamCatalog + Clone + 'static> CliStore for S {}

/// Forgets a data subject in the store: set by [`Cli::forgetting`].
type ForgetFn<S> = for<'a> fn(&'a S, &'a str) -> BoxFuture<'a, StoreResult<bool>>;

/// The command line of one application: its store, aggregates and projections.
pub struct Cli<S> {
    store: S,
    registry: EventRegistry,
    aggregates: BTreeMap<&'static str, Box<dyn AggregateView<S>>>,
    projections: Vec<Box<dyn ProjectionView>>,
    forget: Option<ForgetFn<S>>,
    lifecycle: Option<closing::Lifecycle<S>>,
    program: Program,
}

fn forget_in<'a, S: ForgetSubjects>(store: &'a S, subject: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
    store.forget_subject(subject)
}

impl<S: CliStore> Cli<S> {
    /// A command line over `store`, with no aggregates or projections yet but
    /// [`ClosedStream`]: the events that record closed streams (`es_core::lifecycle`) are in
    /// every store's global log, and read like any other.
    pub fn new(store: S) -> Self {
        let mut cli = Self {
            store,
            registry: EventRegistry::new(),
            aggregates: BTreeMap::new(),
            projections: Vec::new(),
            forget: None,
            lifecycle: None,
            program: Program::default(),
        };
        // The first registration in an empty registry cannot clash with anything.
        if cli.registry.register::<ClosedStream>().is_ok() {
            cli.aggregates
                .insert(ClosedStream::TYPE, Box::new(Typed::<ClosedStream>::new()));
        }
        cli
    }

    /// Enables `forget SUBJECT --yes`, for a store that seals personal data (an
    /// [`es_core::pii::PiiStore`]): it destroys the subject's key for good. Also registers
    /// [`ForgottenSubject`], so the events that record forgetting read like any other.
    pub fn forgetting(mut self) -> Result<Self, RegistryError>
    where
        S: ForgetSubjects,
    {
        self.forget = Some(forget_in::<S>);
        self.aggregate::<ForgottenSubject>()
    }

    /// Enables `close STREAM --as tombstoned|archived|deleted --by WHO --reason WHY --yes` and
    /// `closed` (the records of closed streams: the audit of deletions), and lets `events`,
    /// `state` and `diff` show an archived stream's events and states from the archive, for a
    /// store with
    /// [`StreamLifecycle`](es_core::lifecycle::StreamLifecycle): every store of this workspace.
    pub fn closing(mut self) -> Self
    where
        S: es_core::lifecycle::StreamLifecycle,
    {
        self.lifecycle = Some(closing::Lifecycle::of());
        self
    }

    /// How the binary presents itself in `--help` and `--version`: its name, version, usage
    /// and how it chooses its store (see [`Program`]).
    pub fn program(mut self, program: Program) -> Self {
        self.program = program;
        self
    }

    /// Registers aggregate `A`: its events are decoded and its states folded by the commands.
    /// Two Rust types with the same stored aggregate type are refused.
    pub fn aggregate<A: Aggregate>(mut self) -> Result<Self, RegistryError> {
        self.registry.register::<A>()?;
        self.aggregates.insert(A::TYPE, Box::new(Typed::<A>::new()));
        Ok(self)
    }

    /// Registers a projection, with the runner that keeps it: `projections` shows its lag and
    /// claim, `rebuild` rebuilds it.
    pub fn projection<P, E, C>(mut self, runner: ProjectionRunner<P, E, C>) -> Self
    where
        P: Projection + 'static,
        E: GlobalLog + 'static,
        C: CheckpointStore<Context = P::Context> + 'static,
    {
        self.projections.push(Box::new(runner));
        self
    }

    /// Whether an event this program knows (or one of the framework's own) is stored as
    /// `name`, by its name or an alias.
    fn stores_name(&self, name: &str) -> bool {
        use es_core::EventType;
        [
            es_core::lifecycle::StreamClosed::NAME,
            es_core::pii::SubjectForgotten::NAME,
        ]
        .contains(&name)
            || self
                .registry
                .events()
                .any(|registered| registered.event.name == name || registered.event.aliases.contains(&name))
    }

    /// Parses the process's arguments, runs the command, prints to stdout and stderr, and
    /// returns the exit code.
    pub async fn run(self) -> ExitCode {
        self.run_from(std::env::args_os()).await
    }

    /// Like [`Cli::run`] with the given arguments (the first is the program's name).
    pub async fn run_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut stdout = std::io::stdout();
        let mut stderr = std::io::stderr();
        self.execute(args, &mut stdout, &mut stderr).await.into()
    }

    /// The web event browser of `es serve`, as an axum [`Router`](axum::Router) to serve on a
    /// listener of one's own (or to call in tests): read-only pages of streams, events, states,
    /// the live global log and projections. It answers only requests whose `Host` is a
    /// loopback name (or that have none).
    pub fn into_router(self) -> axum::Router {
        serve::router(self)
    }

    /// Runs the command of `args` printing to `out` (results) and `err` (errors, progress).
    pub async fn execute<I, T>(self, args: I, out: &mut (dyn Write + Send), err: &mut (dyn Write + Send)) -> Exit
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args = match preflight::parse(&self.program, args, out, err) {
            Ok(args) => args,
            Err(exit) => return exit,
        };
        // Before anything is printed, so that a Ctrl-C at any moment ends these as documented.
        let interrupt = match &args.command {
            Command::Log { follow: true, .. } | Command::Serve { .. } | Command::Rebuild { .. } => {
                Some(Interrupt::install())
            }
            _ => None,
        };
        let mut output = Output { json: args.json, out };
        match self.dispatch(args.command, interrupt, &mut output, err).await {
            Ok(exit) => exit,
            Err(failure) => {
                let _ = writeln!(err, "error: {}", failure.message);
                failure.exit
            }
        }
    }

    async fn dispatch(
        self,
        command: Command,
        interrupt: Option<Interrupt>,
        out: &mut Output<'_>,
        err: &mut (dyn Write + Send),
    ) -> Result<Exit, Failure> {
        let cli = &self;
        // Only the commands that wait for Ctrl-C have a handler; the others keep its default.
        let mut interrupt = interrupt.unwrap_or_else(Interrupt::none);
        match command {
            Command::Streams {
                aggregate_type,
                id_prefix,
                after,
                limit,
            } => commands::streams(cli, out, aggregate_type, id_prefix, after.as_ref(), limit).await,
            Command::Events { stream, from, to } => commands::events(cli, out, &stream, from, to).await,
            Command::State { stream, version, at } => state::state(cli, out, &stream, version, at).await,
            Command::Diff { stream, from, to } => diff::diff(cli, out, &stream, from, to).await,
            Command::Log {
                after,
                types,
                names,
                limit,
                follow,
            } => {
                for name in names.iter().filter(|name| !self.stores_name(name)) {
                    // Not an error: the log may hold events of types this binary does not know.
                    writeln!(
                        err,
                        "note: no event this program knows is stored as `{name}` (`es registry` lists the stored \
                         names; the framework's own are `{}` and `{}`)",
                        <es_core::lifecycle::StreamClosed as es_core::EventType>::NAME,
                        <es_core::pii::SubjectForgotten as es_core::EventType>::NAME
                    )?;
                }
                let filter = es_core::LogFilter::all().aggregate_types(types).names(names);
                commands::log(cli, out, after, &filter, limit, follow, &mut interrupt).await
            }
            Command::Registry => commands::registry(cli, out),
            Command::Forget { subject, yes } => commands::forget(cli, out, &subject, yes).await,
            Command::Close {
                stream,
                status,
                by,
                reason,
                yes,
            } => {
                closing::close(
                    cli,
                    out,
                    &stream,
                    status,
                    es_core::lifecycle::StreamChange::new(by, reason),
                    yes,
                )
                .await
            }
            Command::Closed { status, after, limit } => closing::closed(cli, out, status, after, limit).await,
            Command::Projections => projections::projections(cli, out).await,
            Command::Rebuild { name } => long::rebuild(cli, out, err, &name, &mut interrupt).await,
            Command::Parked { name, retry, drop } => {
                let action = match (retry, drop) {
                    (Some(position), _) => parked::ParkedAction::Retry(position),
                    (None, Some(position)) => parked::ParkedAction::Drop(position),
                    (None, None) => parked::ParkedAction::List,
                };
                parked::parked(cli, out, &name, action).await
            }
            Command::Doctor { batch, wait } => long::doctor(cli, out, batch, Duration::from_secs(wait)).await,
            // The server owns the command line: its pages share it for as long as it runs.
            Command::Serve { port } => serve::run(self, port, out, interrupt).await,
        }
    }

    fn view(&self, aggregate_type: &str) -> Result<&dyn AggregateView<S>, Failure> {
        self.aggregates
            .get(aggregate_type)
            .map(|view| view.as_ref())
            .ok_or_else(|| {
                let known: Vec<&str> = self.aggregates.keys().copied().collect();
                Failure::new(
                    Exit::NotFound,
                    format!(
                        "no aggregate of type `{aggregate_type}` is registered; registered: {}",
                        known.join(", ")
                    ),
                )
            })
    }
}
