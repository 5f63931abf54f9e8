//! `projections`: each registered projection's checkpoint, lag, claim and parked events.

use es_core::{ClaimStatus, Lag, ProjectionError, StoreError};
use serde_json::{json, Value};

use crate::long::{holder, in_parentheses};
use crate::output::{Exit, Failure, Output};
use crate::views::ProjectionView;
use crate::{Cli, CliStore};

/// One projection as listed.
struct Listed {
    name: &'static str,
    lag: Lag,
    /// Why its lag in seconds is unknown: the first event after its checkpoint is a row the
    /// store cannot read.
    unreadable: Option<String>,
    claim: ClaimStatus,
    parked: usize,
}

pub(crate) async fn projections<S: CliStore>(cli: &Cli<S>, out: &mut Output<'_>) -> Result<Exit, Failure> {
    let mut listed = Vec::new();
    for view in &cli.projections {
        let (lag, unreadable) = lag(cli, view.as_ref()).await?;
        listed.push(Listed {
            name: view.name(),
            lag,
            unreadable,
            claim: view.claim_status().await.map_err(Failure::store)?,
            parked: view.parked().await.map_err(Failure::store)?.len(),
        });
    }
    // Events committed but not in the log yet count for every projection alike: no checkpoint
    // lies past the log's settled head.
    let held_back = cli.store.unsettled(0).await.map_err(Failure::store)?;
    let held_back_by = holder(cli, held_back).await;
    let exit = if listed.iter().any(|listed| listed.unreadable.is_some()) {
        Exit::Problems
    } else {
        Exit::Ok
    };
    if out.json {
        let listed: Vec<Value> = listed
            .iter()
            .map(|listed| {
                json!({
                    "name": listed.name,
                    "checkpoint": listed.lag.checkpoint,
                    "events_behind": listed.lag.events_behind,
                    "seconds_behind": listed.unreadable.is_none().then_some(listed.lag.seconds_behind),
                    "unreadable": listed.unreadable,
                    "claim": match listed.claim { ClaimStatus::Held => "held", ClaimStatus::Free => "free" },
                    "parked": listed.parked,
                })
            })
            .collect();
        out.json(&json!({
            "projections": listed, "events_held_back": held_back, "held_back_by": held_back_by,
        }))?;
        return Ok(exit);
    }
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|listed| {
            vec![
                listed.name.to_owned(),
                listed.lag.checkpoint.to_string(),
                listed.lag.events_behind.to_string(),
                match listed.unreadable {
                    Some(_) => "?".to_owned(),
                    None => format!("{:.1}", listed.lag.seconds_behind),
                },
                match listed.claim {
                    ClaimStatus::Held => "held by a runner".to_owned(),
                    ClaimStatus::Free => "no runner".to_owned(),
                },
                listed.parked.to_string(),
            ]
        })
        .collect();
    out.table(
        &[
            "PROJECTION",
            "CHECKPOINT",
            "EVENTS BEHIND",
            "SECONDS BEHIND",
            "CLAIM",
            "PARKED",
        ],
        &rows,
    )?;
    for listed in &listed {
        if let Some(reason) = &listed.unreadable {
            out.line(format!(
                "{}: the first event after its checkpoint cannot be read: {reason} (`doctor` lists every such row)",
                listed.name
            ))?;
        }
    }
    if held_back > 0 {
        out.line(format!(
            "{held_back} events committed are not in the global log yet, held back by a write transaction open \
             elsewhere{}: no projection sees them until it ends",
            in_parentheses(&held_back_by)
        ))?;
    }
    Ok(exit)
}

/// A projection's lag. When the oldest event it has not read is a row the store cannot turn
/// into an event, its age is unknown: the lag in events is still counted, and the row named.
async fn lag<S: CliStore>(cli: &Cli<S>, view: &dyn ProjectionView) -> Result<(Lag, Option<String>), Failure> {
    let source = match view.lag().await {
        Ok(lag) => return Ok((lag, None)),
        Err(ProjectionError::Store {
            source: source @ StoreError::Corrupt { .. },
            ..
        }) => source,
        Err(error) => return Err(Failure::store(error)),
    };
    let checkpoint = view.checkpoint().await.map_err(Failure::store)?;
    let tail = cli.store.tail(checkpoint).await.map_err(Failure::store)?;
    let lag = Lag {
        checkpoint,
        events_behind: tail.events,
        seconds_behind: 0.0,
    };
    Ok((lag, Some(source.to_string())))
}
