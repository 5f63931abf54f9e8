//! `es diff`: what changed in an aggregate's state between two versions.

use es_core::{AsOf, StreamId};
use serde_json::{json, Value};

use crate::commands::past_the_end;
use crate::output::{Exit, Failure, Output};
use crate::state::history;
use crate::{Cli, CliStore};

/// One difference between two JSON values: the path, the value before and after (`None` when
/// absent on that side).
pub(crate) struct Change {
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Appends to `found` every difference between `before` and `after`, under `path`.
pub(crate) fn changes(path: &str, before: Option<&Value>, after: Option<&Value>, found: &mut Vec<Change>) {
    match (before, after) {
        (Some(Value::Object(old)), Some(Value::Object(new))) => {
            let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            for key in keys {
                changes(&format!("{path}.{key}"), old.get(key), new.get(key), found);
            }
        }
        (Some(Value::Array(old)), Some(Value::Array(new))) => {
            for index in 0..old.len().max(new.len()) {
                changes(&format!("{path}[{index}]"), old.get(index), new.get(index), found);
            }
        }
        (old, new) if old != new => found.push(Change {
            path: path.to_owned(),
            before: old.cloned(),
            after: new.cloned(),
        }),
        _ => {}
    }
}

pub(crate) async fn diff<S: CliStore>(
    cli: &Cli<S>,
    out: &mut Output<'_>,
    stream: &StreamId,
    from: u64,
    to: u64,
) -> Result<Exit, Failure> {
    cli.view(&stream.aggregate_type)?;
    let (last, history) = history(cli, stream).await?;
    if let Some(beyond) = [from, to].into_iter().find(|version| *version > last) {
        return Err(past_the_end(stream, last, &format!("version {beyond}")));
    }
    if from > to {
        return Err(Failure::new(
            Exit::Usage,
            format!("version {from} is after version {to}: give the earlier version first"),
        ));
    }
    let (from_version, before) = history.state(cli, stream, AsOf::Version(from)).await?;
    let (to_version, after) = history.state(cli, stream, AsOf::Version(to)).await?;
    let mut found = Vec::new();
    changes("$", Some(&before), Some(&after), &mut found);
    if out.json {
        let listed: Vec<Value> = found
            .iter()
            .map(|change| json!({ "path": change.path, "before": change.before, "after": change.after }))
            .collect();
        out.json(&json!({
            "stream": stream.to_string(), "from": from_version, "to": to_version, "changes": listed,
        }))?;
        return Ok(Exit::Ok);
    }
    out.line(format!("{stream}: version {from_version} -> {to_version}"))?;
    if found.is_empty() {
        out.line("  no change")?;
    }
    for change in found {
        let shown = |value: &Option<Value>| value.as_ref().map_or_else(|| "(absent)".to_owned(), Value::to_string);
        let mark = match (&change.before, &change.after) {
            (None, _) => '+',
            (_, None) => '-',
            _ => '~',
        };
        out.line(format!(
            "  {mark} {}: {} -> {}",
            change.path,
            shown(&change.before),
            shown(&change.after)
        ))?;
    }
    Ok(Exit::Ok)
}
