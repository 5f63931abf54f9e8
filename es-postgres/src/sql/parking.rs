//! The statements of parked events: the dead-letter table of projections.

/// The columns every read of parked events selects, decoded by name by `parking::parked_event`.
const PARKED_COLUMNS: &str = "projection, position, event_id, aggregate_type, aggregate_id, version, event_name,
                              error, attempts, parked_at, retry_requested";

/// The statements of parked events.
#[derive(Debug)]
pub(crate) struct ParkingStatements {
    /// Parks an event within a unit, or replaces the error and attempts of one parked before
    /// (keeping when it was first parked) and clears its retry request: `$1` projection, `$2`
    /// position, `$3` event_id, `$4` aggregate_type, `$5` aggregate_id, `$6` version, `$7`
    /// event_name, `$8` error, `$9` attempts, `$10` parked_at.
    pub park: String,
    /// Removes a parked event (within a unit, or for good): `$1` projection, `$2` position.
    pub unpark: String,
    /// The parked events of `$1` projection, in position order.
    pub list: String,
    /// Asks for a parked event to be retried: `$1` projection, `$2` position.
    pub request_retry: String,
}

impl ParkingStatements {
    /// The statements for the quoted schema name `s`.
    pub(super) fn new(s: &str) -> Self {
        Self {
            park: format!(
                "INSERT INTO {s}.parked_events AS p ({PARKED_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, false)
                 ON CONFLICT (projection, position) DO UPDATE
                    SET event_id = excluded.event_id, aggregate_type = excluded.aggregate_type,
                        aggregate_id = excluded.aggregate_id, version = excluded.version,
                        event_name = excluded.event_name, error = excluded.error,
                        attempts = excluded.attempts, retry_requested = false"
            ),
            unpark: format!("DELETE FROM {s}.parked_events WHERE projection = $1 AND position = $2"),
            list: format!("SELECT {PARKED_COLUMNS} FROM {s}.parked_events WHERE projection = $1 ORDER BY position"),
            request_retry: format!(
                "UPDATE {s}.parked_events SET retry_requested = true WHERE projection = $1 AND position = $2"
            ),
        }
    }
}
