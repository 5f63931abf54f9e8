//! The columns of an event row read straight from the bytes of PostgreSQL's binary format, in
//! which sqlx receives the results of every prepared statement. A read of the global log
//! decodes 14 columns a row, and sqlx's `try_get` cost more than the decoding itself (a type
//! check per value, and its large error moved through every call). Every reader checks the
//! value's length, so a value of another width is an error, never a panic.

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgRow, PgValueFormat};
use sqlx::{Row, ValueRef};
use uuid::Uuid;

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01 00:00:00 UTC: where its binary
/// timestamps count from, read here and written by the bulk import's `COPY`.
pub(crate) const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The reason for a NULL where a value must be.
pub(super) fn null() -> String {
    "NULL".to_owned()
}

/// The value's bytes, `None` for NULL.
fn bytes(row: &PgRow, index: usize) -> Result<Option<&[u8]>, String> {
    // Borrowed where it lies: moving the value out of its `Result` copied it through
    // misaligned stack slots, and those copies stalled the CPU for a seventh of a read's time.
    let raw = row.try_get_raw(index);
    let value = match &raw {
        Ok(value) => value,
        Err(error) => return Err(error.to_string()),
    };
    if value.is_null() {
        return Ok(None);
    }
    if value.format() != PgValueFormat::Binary {
        return Err("a value in text format".to_owned());
    }
    value.as_bytes().map(Some).map_err(|e| e.to_string())
}

/// The value's bytes, which must be `N` of them.
fn fixed<const N: usize>(row: &PgRow, index: usize) -> Result<Option<[u8; N]>, String> {
    match bytes(row, index)? {
        None => Ok(None),
        Some(bytes) => bytes
            .try_into()
            .map(Some)
            .map_err(|_| format!("{} bytes where {N} must be", bytes.len())),
    }
}

pub(super) fn int8(row: &PgRow, index: usize) -> Result<i64, String> {
    Ok(i64::from_be_bytes(fixed(row, index)?.ok_or_else(null)?))
}

pub(super) fn int4(row: &PgRow, index: usize) -> Result<i32, String> {
    Ok(i32::from_be_bytes(fixed(row, index)?.ok_or_else(null)?))
}

pub(super) fn uuid(row: &PgRow, index: usize) -> Result<Option<Uuid>, String> {
    Ok(fixed(row, index)?.map(Uuid::from_bytes))
}

pub(super) fn optional_text(row: &PgRow, index: usize) -> Result<Option<&str>, String> {
    bytes(row, index)?
        .map(|bytes| std::str::from_utf8(bytes).map_err(|e| e.to_string()))
        .transpose()
}

pub(super) fn text(row: &PgRow, index: usize) -> Result<&str, String> {
    optional_text(row, index)?.ok_or_else(null)
}

/// The `timestamptz` column named `column`, `None` for NULL; a time outside what `DateTime`
/// holds (`'infinity'`, say) is an error, never a panic (sqlx's own decoder panics on it).
pub(crate) fn timestamptz_named(row: &PgRow, column: &str) -> Result<Option<DateTime<Utc>>, String> {
    use sqlx::Column;
    let index = row
        .columns()
        .iter()
        .position(|found| found.name() == column)
        .ok_or_else(|| format!("no column `{column}`"))?;
    match fixed::<8>(row, index)? {
        None => Ok(None),
        Some(_) => timestamptz(row, index).map(Some),
    }
}

pub(super) fn timestamptz(row: &PgRow, index: usize) -> Result<DateTime<Utc>, String> {
    let micros = i64::from_be_bytes(fixed(row, index)?.ok_or_else(null)?);
    micros
        .checked_add(POSTGRES_EPOCH_MICROS)
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(|| format!("{micros} microseconds from 2000-01-01 is out of range"))
}
