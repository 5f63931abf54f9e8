//! The command line's grammar, derived with clap. Its doc comments are the help an operator
//! reads: they say what a command does for them, not how the library is built.

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use es_core::StreamId;

/// Look at this application's event store: its streams and events, an aggregate's state at any
/// version or instant, the global log (live), projections; check that every stored event
/// decodes, rebuild a projection, serve a read-only event browser.
#[derive(Debug, Parser)]
#[command(version, long_about = None)]
pub(crate) struct Args {
    /// Print JSON instead of text (one document; `log` prints one object per line).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Forget a data subject for good (only in a program that seals personal data)
    ///
    /// Destroys the key of the subject's personal data, which then reads as forgotten
    /// everywhere. A program that keeps no personal data sealed refuses.
    Forget {
        /// The subject: `type/id` for a stream's own data (e.g. `lead/L-7`), else the subject
        /// field's value.
        subject: String,
        /// Confirms: forgetting cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Close a stream for good: tombstone, archive or delete it
    ///
    /// Tombstoned, it takes no more events; archived, its events leave the hot table and stay
    /// in the global log; deleted, its events are removed and an audit record stays. A program
    /// that does not enable closing streams refuses.
    Close {
        /// The stream, as `type/id` (e.g. `ticket/T-1`).
        #[arg(value_parser = stream_arg)]
        stream: StreamId,
        /// What the stream becomes.
        #[arg(long = "as", value_enum, value_name = "STATUS")]
        status: Closing,
        /// Who asks: kept in the record.
        #[arg(long, value_name = "WHO")]
        by: String,
        /// Why: kept in the record.
        #[arg(long, value_name = "WHY")]
        reason: String,
        /// Confirms: closing cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// List closed streams: who closed them, when, why (by default the audit of deletions)
    ///
    /// Each record says how many events went. A program that does not enable closing streams
    /// refuses.
    Closed {
        /// Which closed streams.
        #[arg(long, value_enum, default_value = "deleted", value_name = "STATUS")]
        status: Closing,
        /// Only streams after this one (`type/id`): the next page.
        #[arg(long, value_name = "STREAM", value_parser = stream_arg)]
        after: Option<StreamId>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// List streams with their event counts and last activity, in (type, id) order
    Streams {
        /// Only streams of this aggregate type.
        #[arg(long = "type", value_name = "TYPE")]
        aggregate_type: Option<String>,
        /// Only streams whose id starts with this.
        #[arg(long = "id", value_name = "PREFIX")]
        id_prefix: Option<String>,
        /// Only streams after this one (`type/id`): the next page.
        #[arg(long, value_name = "STREAM", value_parser = stream_arg)]
        after: Option<StreamId>,
        /// At most this many streams.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show a stream's events: ids, times, correlation, causation, actor and payloads
    ///
    /// A stored row that cannot be read is shown in its place, with why. A version past the
    /// stream's last is not found (exit 3); `--from` after `--to` is a usage error. An archived
    /// stream's events are read from the archive (on programs that close streams).
    Events {
        /// The stream, as `type/id` (e.g. `ticket/T-1`).
        #[arg(value_parser = stream_arg)]
        stream: StreamId,
        /// From this version (inclusive; at most the stream's last).
        #[arg(long, value_name = "VERSION")]
        from: Option<u64>,
        /// Up to this version (inclusive; past the last is the last).
        #[arg(long, value_name = "VERSION")]
        to: Option<u64>,
    },
    /// Show an aggregate's state: now, at a version, or at an instant (time travel)
    ///
    /// A version past the stream's last is not found (exit 3), naming the last; an instant
    /// after the last event is the last version. An archived stream's state is folded from
    /// the archive (on programs that close streams).
    State {
        /// The stream, as `type/id`.
        #[arg(value_parser = stream_arg)]
        stream: StreamId,
        /// The state after this version (0: the initial state; at most the stream's last).
        #[arg(long, conflicts_with = "at")]
        version: Option<u64>,
        /// The state as of this instant (RFC 3339, e.g. `2026-12-04T10:00:00Z`).
        #[arg(long, value_name = "INSTANT", value_parser = instant_arg)]
        at: Option<DateTime<Utc>>,
    },
    /// Show what changed in an aggregate's state between two versions
    ///
    /// A version past the stream's last is not found (exit 3), naming the last; the later
    /// version before the earlier is a usage error (exit 2). An archived stream's states are
    /// folded from the archive (on programs that close streams).
    Diff {
        /// The stream, as `type/id`.
        #[arg(value_parser = stream_arg)]
        stream: StreamId,
        /// The earlier version (at most the stream's last).
        from: u64,
        /// The later version (at most the stream's last).
        to: u64,
    },
    /// Print the global log in commit order, or, for an audit, some aggregate types or names
    ///
    /// Every event of every stream, in commit order; a stored row that cannot be read is
    /// shown in its place, with why. `--follow` runs until Ctrl-C (exit 130).
    Log {
        /// Only events after this position (0: from the first event, with `--follow` too).
        #[arg(long)]
        after: Option<u64>,
        /// Only events of this aggregate type (repeat the option for several).
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        /// Only events stored under this name (repeat the option for several).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// At most this many events (without `--follow`).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Keep printing events as they are committed, from the head of the log (or `--after`),
        /// until Ctrl-C (exit 130).
        #[arg(long)]
        follow: bool,
    },
    /// Show each projection's checkpoint, lag, and whether a runner holds it
    ///
    /// The lag counts every event after the checkpoint, of any aggregate type: a running runner
    /// moves its checkpoint past the ones it does not read. Events held back from the log by a
    /// write transaction open elsewhere (PostgreSQL) are told apart, with the session holding them.
    Projections,
    /// Empty a projection's read model and replay every event into it, showing progress
    ///
    /// Ctrl-C stops it (exit 130) and names the checkpoint it leaves: the batch in hand commits
    /// or rolls back whole, the read model and its checkpoint agree, and a runner or another
    /// rebuild goes on from there. Refused (exit 5) while a runner holds the projection.
    Rebuild {
        /// The projection's name (see `projections`).
        name: String,
    },
    /// List a projection's parked events, or retry or drop one
    ///
    /// Parked events are those its failure policy set aside. Once the cause is fixed, retry one
    /// (the projection's runner handles it again, exactly once) or drop it for good.
    Parked {
        /// The projection's name (see `projections`).
        name: String,
        /// Ask the projection's runner to handle the parked event at this position again.
        #[arg(long, value_name = "POSITION", conflicts_with = "drop")]
        retry: Option<u64>,
        /// Forget the parked event at this position.
        #[arg(long, value_name = "POSITION")]
        drop: Option<u64>,
    },
    /// Check that every stored event and snapshot decodes; exit 1 if any does not
    ///
    /// Decodes every stored event and snapshot with this program's types, and reports each
    /// that fails, and every stored row that cannot be read at all, with its stream, version
    /// and position. On PostgreSQL, events held back from the global log by a write
    /// transaction open elsewhere are waited for (`--wait`), then counted as not checked.
    Doctor {
        /// Snapshots read per query, and events checked between progress updates (the events
        /// are read with one query).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Seconds to wait for events held back behind open transactions to join the log
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        wait: u64,
    },
    /// Print the registered aggregates and their events: names, aliases, versions, upcasts
    Registry,
    /// Serve a read-only web browser of the store on 127.0.0.1, until Ctrl-C (exit 130)
    ///
    /// Streams and their events, states at any version, the live global log, projections.
    /// Every page is bounded: 50 streams (up to 500 with `?limit=`), 50 versions of a stream,
    /// 50 events of the log, 500 events per live update.
    Serve {
        /// The port to listen on (0: any free port). The URL is the first line printed.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}

/// A stream argument, written `type/id` (the id may contain `/`).
pub(crate) fn stream_arg(text: &str) -> Result<StreamId, String> {
    match text.split_once('/') {
        Some((kind, id)) if !kind.is_empty() && !id.is_empty() => Ok(StreamId::new(kind, id)),
        _ => Err(format!(
            "`{text}` is not a stream: write it as `type/id`, e.g. `ticket/T-1`"
        )),
    }
}

/// An instant, as RFC 3339: the parser's own message ("input contains invalid characters")
/// does not say what it wants.
pub(crate) fn instant_arg(text: &str) -> Result<DateTime<Utc>, String> {
    text.parse().map_err(|error| {
        format!("`{text}` is not an instant ({error}): write it in RFC 3339, e.g. `2026-12-04T10:00:00Z`")
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_grammar_is_consistent() {
        super::Args::command().debug_assert();
    }

    #[test]
    fn streams_are_type_slash_id() {
        let stream = super::stream_arg("lead/2026/L-7").expect("a stream");
        assert_eq!(
            (stream.aggregate_type.as_str(), stream.aggregate_id.as_str()),
            ("lead", "2026/L-7")
        );
        for wrong in ["T-1", "/T-1", "ticket/", ""] {
            assert!(super::stream_arg(wrong).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn instants_are_rfc_3339_and_a_wrong_one_says_so() {
        let instant = super::instant_arg("2026-12-04T10:00:00+01:00").expect("an instant");
        assert_eq!(instant.to_rfc3339(), "2026-12-04T09:00:00+00:00");
        let refused = super::instant_arg("yesterday").expect_err("not an instant");
        assert!(refused.contains("RFC 3339, e.g. `2026-12-04T10:00:00Z`"), "{refused}");
    }
}

/// What `close` makes of a stream, and which closed streams `closed` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Closing {
    /// No more events; its events stay.
    Tombstoned,
    /// Its events move to the archive.
    Archived,
    /// Its events are removed.
    Deleted,
}

impl Closing {
    pub(crate) fn status(self) -> es_core::lifecycle::StreamStatus {
        use es_core::lifecycle::StreamStatus;
        match self {
            Self::Tombstoned => StreamStatus::Tombstoned,
            Self::Archived => StreamStatus::Archived,
            Self::Deleted => StreamStatus::Deleted,
        }
    }
}
