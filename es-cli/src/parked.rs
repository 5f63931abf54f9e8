//! `parked`: the events a projection set aside under `FailurePolicy::Park`, and what an
//! operator does with them once the cause is fixed.

use serde_json::{json, Value};

use crate::long::find;
use crate::output::{Exit, Failure, Output};
use crate::{Cli, CliStore};

/// What `parked` does with the projection's parked events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParkedAction {
    List,
    Retry(u64),
    Drop(u64),
}

pub(crate) async fn parked<S: CliStore>(
    cli: &Cli<S>,
    out: &mut Output<'_>,
    name: &str,
    action: ParkedAction,
) -> Result<Exit, Failure> {
    let view = find(cli, name)?;
    let (position, done, verb) = match action {
        ParkedAction::List => return list(out, name, view.parked().await.map_err(Failure::store)?),
        ParkedAction::Retry(position) => (position, view.retry_parked(position).await, "asked to be retried"),
        ParkedAction::Drop(position) => (position, view.drop_parked(position).await, "dropped"),
    };
    if !done.map_err(Failure::store)? {
        return Err(Failure::new(
            Exit::NotFound,
            format!("projection `{name}` has no parked event at position {position}"),
        ));
    }
    if out.json {
        out.json(&json!({ "projection": name, "position": position, "done": verb }))?;
    } else {
        let next = match action {
            ParkedAction::Retry(_) => "; the projection's runner handles it before its next batch",
            _ => "",
        };
        out.line(format!("parked event at position {position} of `{name}` {verb}{next}"))?;
    }
    Ok(Exit::Ok)
}

fn list(out: &mut Output<'_>, name: &str, parked: Vec<es_core::ParkedEvent>) -> Result<Exit, Failure> {
    if out.json {
        let listed: Vec<Value> = parked
            .iter()
            .map(|event| {
                json!({
                    "position": event.position,
                    "event_id": event.event_id,
                    "stream": event.stream.to_string(),
                    "version": event.version,
                    "event_name": event.event_name,
                    "error": event.error,
                    "attempts": event.attempts,
                    "parked_at": event.parked_at,
                    "retry_requested": event.retry_requested,
                })
            })
            .collect();
        out.json(&json!({ "projection": name, "parked": listed }))?;
        return Ok(Exit::Ok);
    }
    if parked.is_empty() {
        out.line(format!("projection `{name}` has no parked events"))?;
        return Ok(Exit::Ok);
    }
    let rows: Vec<Vec<String>> = parked
        .iter()
        .map(|event| {
            vec![
                event.position.to_string(),
                event.stream.to_string(),
                event.version.to_string(),
                event.event_name.clone(),
                event.attempts.to_string(),
                event.parked_at.to_rfc3339(),
                if event.retry_requested { "yes" } else { "" }.to_owned(),
                event.error.clone(),
            ]
        })
        .collect();
    out.table(
        &[
            "POSITION",
            "STREAM",
            "VERSION",
            "EVENT",
            "ATTEMPTS",
            "PARKED AT",
            "RETRY ASKED",
            "ERROR",
        ],
        &rows,
    )?;
    Ok(Exit::Ok)
}
