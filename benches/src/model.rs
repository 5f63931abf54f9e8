//! What the three implementations share: the account domain's rules in plain data, the deposits
//! they generate, and the summary every load is checked against.
//!
//! The domain is a bank account with two events: `AccountOpened { owner }` and
//! `MoneyDeposited { amount, reference }`. `MoneyDeposited` is at schema version 2; version 1 had
//! no `reference`, and upcasting fills in [`LEGACY_REFERENCE`]. The deposit stored at stream
//! version `v` is deposit number `v - 1`, with amount [`amount()`]`(v - 1)` and reference
//! [`reference()`]`(v - 1)`, so every implementation writes the same events and folds to the
//! same [`Summary`].

use std::fmt;

/// The owner every benchmark account is opened for.
pub const OWNER: &str = "Ada Lovelace";

/// The reference upcasting gives deposits stored at schema version 1.
pub const LEGACY_REFERENCE: &str = "legacy (before v2)";

/// The amount of deposit number `index` (from 1).
pub fn amount(index: u64) -> i64 {
    // Always in 1..=997, so it fits an i64 whatever the index.
    i64::from(u16::try_from(index % 997).unwrap_or(0)) + 1
}

/// The reference of deposit number `index` (from 1).
pub fn reference(index: u64) -> String {
    format!("invoice-{index:010}")
}

/// Why an account command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountError {
    /// The account was already opened.
    AlreadyOpened,
    /// The account was never opened.
    NotOpened,
}

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyOpened => f.write_str("the account is already open"),
            Self::NotOpened => f.write_str("the account was never opened"),
        }
    }
}

impl std::error::Error for AccountError {}

/// An account's state reduced to what the benchmark checks: every implementation's load must
/// produce the same summary for the same stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// The stream version the state reflects.
    pub version: u64,
    /// The sum of all deposits.
    pub balance: i64,
    /// How many deposits were folded.
    pub deposits: u64,
}

impl Summary {
    /// The summary of a stream of `events` events: the opening, then deposits 1 to `events - 1`.
    pub fn of_stream(events: u64) -> Self {
        let deposits = events.saturating_sub(1);
        Self {
            version: events,
            balance: (1..=deposits).map(amount).sum(),
            deposits,
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "version {} balance {} deposits {}",
            self.version, self.balance, self.deposits
        )
    }
}

/// What a read of many events found: how many, and the sum of the deposits among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Events read.
    pub events: u64,
    /// The sum of the deposit amounts read.
    pub amount: i64,
    /// How many deposits carried [`LEGACY_REFERENCE`] (were upcast from version 1).
    pub legacy: u64,
}

impl Tally {
    /// Counts one event; `deposit` is its amount and whether it was upcast, for deposits.
    pub fn count(&mut self, deposit: Option<(i64, bool)>) {
        self.events += 1;
        if let Some((amount, legacy)) = deposit {
            self.amount += amount;
            self.legacy += u64::from(legacy);
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "events {} amount {} legacy {}",
            self.events, self.amount, self.legacy
        )
    }
}

/// One stored event of the upcasting scenario, as it sits in the store: name, schema version
/// and JSON payload. Built in memory, in each implementation's own payload format.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The stored event name.
    pub name: &'static str,
    /// The stored schema version.
    pub schema_version: u32,
    /// The JSON payload.
    pub payload: Vec<u8>,
}

/// Whether deposit `index` of the upcasting scenario is stored at the old schema version: every
/// second one, so half of them are.
pub fn stored_as_v1(index: u64) -> bool {
    index % 2 == 1
}
