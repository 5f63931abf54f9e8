//! The statements of projection checkpoints and claims.

/// The claim's advisory lock key, from `$1` (the claim key text): one 64-bit key, which
/// `pg_locks` shows as `classid` (its high 32 bits) and `objid` (its low 32 bits) with
/// `objsubid = 1`, the mark of a one-key advisory lock (two 32-bit keys show as 2).
macro_rules! claim_key {
    () => {
        "hashtextextended($1, 0)"
    };
}

/// The statements of projection checkpoints and claims.
#[derive(Debug)]
pub(crate) struct CheckpointStatements {
    /// Opens a unit of work: simple-query protocol, both statements in one round trip.
    pub begin: String,
    /// Serializes the units of one projection: a transaction-scoped advisory lock, which (unlike
    /// a row lock) assigns the unit no transaction id. `$1` the unit key text. Its own statement,
    /// before [`read_row`](Self::read_row): under `READ COMMITTED` that read then takes its
    /// snapshot after the lock is granted, and so sees what the previous unit committed.
    pub lock_unit: &'static str,
    /// Reads the checkpoint row and the claim within the unit, without locking the row: `$1`
    /// projection.
    pub read_row: String,
    /// Tries the claim's advisory lock: `$1` the claim key.
    pub try_lock: &'static str,
    /// Whether any session of the cluster holds the claim's advisory lock in this database,
    /// without taking it: `$1` the claim key. One row, `held`.
    pub claim_held: &'static str,
    /// Raises the claim epoch for a new owner: `$1` projection, `$2` owner.
    pub take_claim: String,
    /// Raises the claim epoch for the same owner, only if the claim is still `$2`'s: `$1`
    /// projection. By owner, not by epoch: a re-claim whose answer was lost raised the epoch
    /// already, and only another runner's claim changes the owner.
    pub retake_claim: String,
    /// Saves the checkpoint under the unit's claim: `$1` projection, `$2` position, `$3` epoch.
    pub save: String,
    /// Reads the checkpoint outside any unit: `$1` projection.
    pub load: String,
    /// Sets another projection's checkpoint within a unit (a blue/green switch), its claim
    /// untouched: `$1` projection, `$2` position.
    pub hand_over: String,
    /// Reads the claim's owner outside any unit: `$1` projection.
    pub owner: String,
}

impl CheckpointStatements {
    /// The statements for the quoted schema name `s`.
    pub(super) fn new(s: &str) -> Self {
        Self {
            // The store's schema alone: a table a handler names unqualified is the store's (a tenant's),
            // never one of the same name in `public` that every tenant would share.
            begin: format!("BEGIN; SET LOCAL search_path TO {s}"),
            // The two-key form (`objsubid = 2` in `pg_locks`): never the same lock as a claim's
            // one-key lock, whatever the hashes.
            lock_unit: "SELECT pg_advisory_xact_lock((k >> 32)::int4, k::bit(32)::int4)
                        FROM (SELECT hashtextextended($1, 0) AS k) AS key",
            read_row: format!(
                "SELECT position, claim_epoch, claim_owner FROM {s}.projection_checkpoints WHERE projection = $1"
            ),
            try_lock: concat!("SELECT pg_try_advisory_lock(", claim_key!(), ")"),
            // `pg_locks` shows the lock table shared by every session of the cluster, so another
            // process's claim is in it; `database` tells this database's locks from others'.
            claim_held: concat!(
                "SELECT EXISTS (
                     SELECT FROM pg_locks AS l, (SELECT ",
                claim_key!(),
                " AS key) AS k
                     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                       AND l.classid = ((k.key >> 32) & 4294967295)::oid
                       AND l.objid = (k.key & 4294967295)::oid
                 ) AS held"
            ),
            take_claim: format!(
                "INSERT INTO {s}.projection_checkpoints AS c (projection, position, claim_epoch, claim_owner, claimed_at)
                 VALUES ($1, 0, 1, $2, now())
                 ON CONFLICT (projection) DO UPDATE
                    SET claim_epoch = c.claim_epoch + 1, claim_owner = $2, claimed_at = now()
                 RETURNING c.claim_epoch"
            ),
            retake_claim: format!(
                "UPDATE {s}.projection_checkpoints SET claim_epoch = claim_epoch + 1, claimed_at = now()
                 WHERE projection = $1 AND claim_owner = $2
                 RETURNING claim_epoch"
            ),
            save: format!(
                "UPDATE {s}.projection_checkpoints SET position = $2, updated_at = now()
                 WHERE projection = $1 AND claim_epoch = $3"
            ),
            load: format!("SELECT position FROM {s}.projection_checkpoints WHERE projection = $1"),
            hand_over: format!(
                "INSERT INTO {s}.projection_checkpoints AS c (projection, position) VALUES ($1, $2)
                 ON CONFLICT (projection) DO UPDATE SET position = $2, updated_at = now()"
            ),
            owner: format!("SELECT claim_owner FROM {s}.projection_checkpoints WHERE projection = $1"),
        }
    }
}
