//! The statements of projection checkpoints and claims.

/// The statements of projection checkpoints and claims.
#[derive(Debug)]
pub(crate) struct CheckpointStatements {
    /// Opens a unit of work: simple-query protocol, both statements in one round trip.
    pub begin: String,
    /// Locks the checkpoint row for the unit: `$1` projection.
    pub lock_row: String,
    /// Tries the claim's advisory lock: `$1` the claim key.
    pub try_lock: &'static str,
    /// Raises the claim epoch for a new owner: `$1` projection, `$2` owner.
    pub take_claim: String,
    /// Raises the claim epoch for the same owner, only if it is still `$2`: `$1` projection.
    pub retake_claim: String,
    /// Saves the checkpoint under the unit's claim: `$1` projection, `$2` position, `$3` epoch.
    pub save: String,
    /// Reads the checkpoint outside any unit: `$1` projection.
    pub load: String,
    /// Reads the claim epoch outside any unit: `$1` projection.
    pub epoch: String,
}

impl CheckpointStatements {
    /// The statements for the quoted schema name `s`.
    pub(super) fn new(s: &str) -> Self {
        Self {
            begin: format!("BEGIN; SET LOCAL search_path TO {s}, public"),
            lock_row: format!(
                "SELECT position, claim_epoch, claim_owner FROM {s}.projection_checkpoints
                 WHERE projection = $1 FOR UPDATE"
            ),
            try_lock: "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
            take_claim: format!(
                "INSERT INTO {s}.projection_checkpoints AS c (projection, position, claim_epoch, claim_owner, claimed_at)
                 VALUES ($1, 0, 1, $2, now())
                 ON CONFLICT (projection) DO UPDATE
                    SET claim_epoch = c.claim_epoch + 1, claim_owner = $2, claimed_at = now()
                 RETURNING c.claim_epoch"
            ),
            retake_claim: format!(
                "UPDATE {s}.projection_checkpoints SET claim_epoch = claim_epoch + 1, claimed_at = now()
                 WHERE projection = $1 AND claim_epoch = $2
                 RETURNING claim_epoch"
            ),
            save: format!(
                "UPDATE {s}.projection_checkpoints SET position = $2, updated_at = now()
                 WHERE projection = $1 AND claim_epoch = $3"
            ),
            load: format!("SELECT position FROM {s}.projection_checkpoints WHERE projection = $1"),
            epoch: format!("SELECT claim_epoch FROM {s}.projection_checkpoints WHERE projection = $1"),
        }
    }
}
