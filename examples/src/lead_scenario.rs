//! A realistic, reproducible sales week: many leads, each taking its own path through the funnel.
//! Shared by the `lead` binary and the projection tests.

use chrono::{DateTime, Duration, TimeZone, Utc};
use es_core::{CommandError, EventStore, Metadata, Repository, SnapshotStore};

use crate::lead::{Lead, LeadError, LeadEvent};

const FIRST_NAMES: [&str; 8] = ["Minji", "Seojun", "Ava", "Lucas", "Hana", "Noah", "Yuna", "Mateo"];
const LAST_NAMES: [&str; 6] = ["Kim", "Park", "Lee", "Garcia", "Smith", "Choi"];

/// A tiny deterministic generator (64-bit LCG): the same seed plays the same week.
#[derive(Debug, Clone)]
pub struct Dice(u64);

impl Dice {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// A number in `0..sides`.
    pub fn roll(&mut self, sides: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % sides.max(1)
    }
}

/// The name a lead was first entered under: with a typo for some leads, fixed later.
pub fn lead_name(index: usize) -> String {
    format!(
        "{} {}",
        FIRST_NAMES[index % FIRST_NAMES.len()],
        LAST_NAMES[(index / FIRST_NAMES.len()) % LAST_NAMES.len()]
    )
}

/// The id of the `index`-th lead of a run tagged `run`.
pub fn lead_id(run: &str, index: usize) -> String {
    format!("{run}-L{index:04}")
}

/// Why the scenario stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A command the scenario expected to succeed was refused or failed.
    #[error("lead {lead}: {source}")]
    Command {
        /// The lead.
        lead: String,
        /// What went wrong.
        #[source]
        source: CommandError<LeadError>,
    },
}

/// Plays the life of leads `range` of run `run` against `leads`. The simulated clock starts on
/// 2025-01-06 09:00 UTC; every step moves it on.
pub async fn play_leads<S>(
    leads: &Repository<Lead, S>,
    run: &str,
    range: std::ops::Range<usize>,
    seed: u64,
) -> Result<u64, ScenarioError>
where
    S: EventStore + SnapshotStore,
{
    let mut dice = Dice::new(seed);
    let mut commands = 0;
    for index in range {
        let id = lead_id(run, index);
        let mut now = Utc.with_ymd_and_hms(2025, 1, 6, 9, 0, 0).single().unwrap_or_default()
            + Duration::minutes(index as i64 * 7);
        let rep = format!("rep:{}", dice.roll(4));

        let true_name = lead_name(index);
        let typo = dice.roll(3) == 0 && with_typo(&true_name) != true_name;
        let entered_name = if typo { with_typo(&true_name) } else { true_name.clone() };
        let phone = format!("010-{:04}-{:04}", index % 10_000, dice.roll(10_000));
        // A new lead: `create` appends without loading first.
        leads
            .create(&id, Metadata::new().with_actor(rep.as_str()), |lead: &Lead| {
                lead.initialize(&entered_name, &phone)
            })
            .await
            .map_err(|source| ScenarioError::Command {
                lead: id.clone(),
                source,
            })?;
        command(leads, &id, &rep, |lead: &Lead| lead.contact()).await?;
        commands += 2;
        for _ in 0..dice.roll(4) {
            now = advance(now, &mut dice);
            let at = now;
            let call_on = now + Duration::days(1 + dice.roll(5) as i64);
            command(leads, &id, &rep, |lead: &Lead| lead.schedule_followup(call_on, at)).await?;
            command(leads, &id, &rep, |lead: &Lead| lead.contact()).await?;
            commands += 2;
        }
        if typo {
            let new_phone = if dice.roll(2) == 0 {
                format!("{phone}-2")
            } else {
                phone.clone()
            };
            command(leads, &id, &rep, |lead: &Lead| {
                lead.update_contact_details(&true_name, &new_phone)
            })
            .await?;
            commands += 1;
        }
        now = advance(now, &mut dice);
        let at = now;
        let deadline = now + Duration::days(3);
        match dice.roll(10) {
            0 | 1 => {
                command(leads, &id, &rep, |lead: &Lead| lead.close()).await?;
                commands += 1;
            }
            2 | 3 => {}
            _ => {
                command(leads, &id, &rep, |lead: &Lead| lead.submit_order(deadline, at)).await?;
                commands += 1;
                if dice.roll(4) == 0 {
                    command(leads, &id, &rep, |lead: &Lead| lead.fail_payment()).await?;
                    commands += 1;
                    if dice.roll(2) == 0 {
                        let later = at + Duration::days(1);
                        command(leads, &id, &rep, |lead: &Lead| {
                            lead.submit_order(later + Duration::days(3), later)
                        })
                        .await?;
                        command(leads, &id, &rep, |lead: &Lead| lead.confirm_payment()).await?;
                        commands += 2;
                    }
                } else {
                    command(leads, &id, &rep, |lead: &Lead| lead.confirm_payment()).await?;
                    commands += 1;
                }
            }
        }
    }
    Ok(commands)
}

async fn command<S: EventStore + SnapshotStore>(
    leads: &Repository<Lead, S>,
    id: &String,
    actor: &str,
    decide: impl Fn(&Lead) -> Result<Vec<LeadEvent>, LeadError>,
) -> Result<(), ScenarioError> {
    leads
        .execute(id, Metadata::new().with_actor(actor), decide)
        .await
        .map(|_| ())
        .map_err(|source| ScenarioError::Command {
            lead: id.clone(),
            source,
        })
}

fn advance(now: DateTime<Utc>, dice: &mut Dice) -> DateTime<Utc> {
    now + Duration::hours(1 + dice.roll(30) as i64)
}

/// The name with its last two letters swapped, as a hurried sales rep would type it.
pub fn with_typo(name: &str) -> String {
    let mut chars: Vec<char> = name.chars().collect();
    let n = chars.len();
    if n >= 2 {
        chars.swap(n - 1, n - 2);
    }
    chars.into_iter().collect()
}
