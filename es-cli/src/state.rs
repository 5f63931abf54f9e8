//! `state` and the states `diff` compares: loaded from the store, or folded from the archive of
//! an archived stream.

use chrono::{DateTime, Utc};
use es_core::lifecycle::{StreamClosed, StreamStatus};
use es_core::{AsOf, StreamId, StreamSlice};
use serde_json::{json, Value};

use crate::commands::{last_version, past_the_end};
use crate::output::{pretty, Exit, Failure, Output};
use crate::rows::Row;
use crate::{Cli, CliStore};

/// The state of `stream` as of `as_of`, or why not.
pub(crate) async fn load<S: CliStore>(cli: &Cli<S>, stream: &StreamId, as_of: AsOf) -> Result<(u64, Value), Failure> {
    let view = cli.view(&stream.aggregate_type)?;
    view.state(&cli.store, stream, as_of)
        .await
        .map_err(|error| match error {
            es_core::RepositoryError::Store(error) => Failure::store(error),
            other => Failure::new(Exit::Problems, other.to_string()),
        })
}

pub(crate) async fn state<S: CliStore>(
    cli: &Cli<S>,
    out: &mut Output<'_>,
    stream: &StreamId,
    version: Option<u64>,
    at: Option<DateTime<Utc>>,
) -> Result<Exit, Failure> {
    // An aggregate type nobody registered is the first thing to say: no state can load.
    cli.view(&stream.aggregate_type)?;
    let (last, history) = history(cli, stream).await?;
    let as_of = match (version, at) {
        (Some(version), _) if version > last => {
            return Err(past_the_end(stream, last, &format!("--version {version}")));
        }
        (Some(version), _) => AsOf::Version(version),
        (None, Some(instant)) => AsOf::Instant(instant),
        (None, None) => AsOf::Latest,
    };
    let (loaded_version, state) = history.state(cli, stream, as_of).await?;
    let closed = match history {
        History::Archived { closed, .. } => Some(closed),
        // A tombstoned stream still loads: say that it takes no more events.
        History::Open => cli
            .store
            .stream_closure(stream)
            .await
            .map_err(Failure::store)?
            .filter(|closed| closed.status == StreamStatus::Tombstoned),
    };
    if out.json {
        let closed = closed.as_ref().map(|closed| {
            json!({ "status": closed.status.as_str(), "by": closed.actor, "reason": closed.reason,
                    "at": closed.at.to_rfc3339() })
        });
        out.json(&json!({
            "stream": stream.to_string(), "version": loaded_version, "state": state, "closed": closed,
        }))?;
    } else {
        out.line(format!("{stream} at version {loaded_version}"))?;
        out.line(pretty(&state))?;
        if let Some(closed) = closed {
            let after = match closed.status {
                StreamStatus::Archived => "folded from the archive",
                _ => "it takes no more events",
            };
            out.line(format!(
                "({} by {} at {}: {}; {after})",
                closed.status,
                closed.actor,
                closed.at.to_rfc3339(),
                closed.reason
            ))?;
        }
    }
    Ok(Exit::Ok)
}

/// Where the states of a stream come from: the store, or the archive of an archived stream.
pub(crate) enum History {
    /// The stream is in the store: states load as the repository loads them.
    Open,
    /// The stream is archived and the program closes streams: states are folded from its
    /// events in the archive.
    Archived { events: Vec<Row>, closed: StreamClosed },
}

/// The last version of `stream` and where its states come from; not found (naming why) when
/// it has no events, in the store or in an archive the program reads.
pub(crate) async fn history<S: CliStore>(cli: &Cli<S>, stream: &StreamId) -> Result<(u64, History), Failure> {
    match last_version(cli, stream).await {
        Ok(last) => Ok((last, History::Open)),
        Err(failure) => match crate::closing::archived_rows(cli, stream, None, None).await? {
            Some((events, closed)) => Ok((closed.version, History::Archived { events, closed })),
            None => Err(failure),
        },
    }
}

impl History {
    /// The state of `stream` as of `as_of`, with its version.
    pub(crate) async fn state<S: CliStore>(
        &self,
        cli: &Cli<S>,
        stream: &StreamId,
        as_of: AsOf,
    ) -> Result<(u64, Value), Failure> {
        let History::Archived { events, .. } = self else {
            return load(cli, stream, as_of).await;
        };
        // The longest prefix within `as_of`, as a load of an open stream folds.
        let slice = match as_of {
            AsOf::Latest => StreamSlice::all(),
            AsOf::Version(version) => StreamSlice::all().to_version(version),
            AsOf::Instant(instant) => StreamSlice::all().recorded_until(instant),
        };
        let mut prefix = events.iter().map_while(|row| match row {
            Row::Event(event) if slice.contains(event) => Some(event),
            _ => None,
        });
        cli.view(&stream.aggregate_type)?
            .fold(&mut prefix)
            .map_err(|error| Failure::new(Exit::Problems, error.to_string()))
    }
}
