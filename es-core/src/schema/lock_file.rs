//! The lock file's format: a commented header, then one entry per event and version, each a
//! header line with its fingerprint and the shape's canonical text, sorted so that it diffs well.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::path::Path;

use super::lock::LockKey;
use super::parse::{tokens, Token};
use super::shape::{name_text, Shape};

const HEADER: &str = "\
# es-rs schema lock: the stored JSON shape of every event type at every schema version.
#
# Events are stored forever; this file records what they look like, so that a test
# (`es_core::testing::assert_schema_lock`) fails when an event's shape changes without a schema
# version bump. Review changes to it like code. Entries of older versions stay: events stored at
# those versions still exist, and their upcasts rely on the shapes recorded here.
#
# Written by that test. To accept an intended change or a new event, run the tests once with
# ES_SCHEMA_LOCK=update and commit this file. `?` marks a field that may be missing, `a|b` a
# field also accepted under the alias `b`; fields are in declaration order.
";

/// The file's text: the header, then the entries sorted, each a header line and its shape.
pub(super) fn render_lock(entries: &BTreeMap<LockKey, Shape>) -> String {
    let mut text = HEADER.to_owned();
    for (key, shape) in entries {
        text.push('\n');
        text.push_str(&format!(
            "[{} {} v{}] {}\n{shape}\n",
            name_text(&key.aggregate_type),
            name_text(&key.event),
            key.version,
            shape.fingerprint()
        ));
    }
    text
}

/// The entries of a lock file; an error is a 1-based line and a message.
pub(super) fn parse_lock(text: &str) -> Result<BTreeMap<LockKey, Shape>, (usize, String)> {
    let mut entries = BTreeMap::new();
    let mut open: Option<OpenEntry<'_>> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            close_entry(&mut entries, open.take())?;
            let (key, fingerprint) = parse_entry_header(line).ok_or_else(|| {
                (
                    number,
                    "expected an entry header like `[aggregate Event v1] 0123456789abcdef`".to_owned(),
                )
            })?;
            open = Some((number, key, fingerprint, Vec::new()));
        } else if let Some((_, _, _, body)) = &mut open {
            body.push(line);
        } else if !line.trim().is_empty() {
            return Err((number, "text outside an entry (entries start with `[`)".to_owned()));
        }
    }
    close_entry(&mut entries, open)?;
    Ok(entries)
}

/// An entry being read: its header's line, key and fingerprint, and its shape's lines.
type OpenEntry<'a> = (usize, LockKey, String, Vec<&'a str>);

fn close_entry(entries: &mut BTreeMap<LockKey, Shape>, open: Option<OpenEntry<'_>>) -> Result<(), (usize, String)> {
    let Some((line, key, fingerprint, body)) = open else {
        return Ok(());
    };
    let shape: Shape = body
        .join("\n")
        .parse()
        .map_err(|error| (line, format!("the shape of {key} does not parse: {error}")))?;
    if shape.fingerprint() != fingerprint {
        return Err((
            line,
            format!("the fingerprint of {key} does not match its shape (was the shape edited by hand?)"),
        ));
    }
    if entries.insert(key.clone(), shape).is_some() {
        return Err((line, format!("{key} is in the lock twice")));
    }
    Ok(())
}

fn parse_entry_header(line: &str) -> Option<(LockKey, String)> {
    let tokens: Vec<Token> = tokens(line).ok()?.into_iter().map(|(token, _)| token).collect();
    let name = |token: &Token| match token {
        Token::Word(name) | Token::Quoted(name) => Some(name.clone()),
        Token::Punct(_) => None,
    };
    match tokens.as_slice() {
        [Token::Punct('['), aggregate_type, event, Token::Word(version), Token::Punct(']'), Token::Word(fingerprint)] =>
        {
            let version = version.strip_prefix('v')?.parse().ok()?;
            let key = LockKey {
                aggregate_type: name(aggregate_type)?,
                event: name(event)?,
                version,
            };
            Some((key, fingerprint.clone()))
        }
        _ => None,
    }
}

/// Writes `text` to a temporary file beside `path` and renames it over `path`, so a reader (or a
/// crash) never sees half a lock.
pub(super) fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the lock path names no file"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let temp = dir.join(format!(".{}.{}.tmp", file_name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        // Best effort: the error that matters is the write's.
        let _ = std::fs::remove_file(&temp);
    }
    written
}
