//! The sales-lead aggregate from the event-sourcing chapter of the DDD literature.
//!
//! A lead is initialized with a name and a phone number, contacted by sales reps, given
//! follow-up calls, and has its contact details corrected. It converts when an order is
//! submitted and paid; a failed payment allows a new order. Until it converts, it can be closed
//! as not interested. Commands check the business rules and answer with events or a
//! [`LeadError`]; the `Apply` impls only record facts.
//!
//! Commands that judge time take `now` as an argument, so decisions are deterministic and
//! testable. Every name and phone a lead ever had stays in its stream, as
//! [`LeadInitialized`] and [`ContactDetailsUpdated`] events, for read models that search them.
//!
//! A lead's name and phone are its personal data: `#[pii]` fields, sealed with the lead's own
//! key when the store is an [`es_core::pii::PiiStore`], and forgotten for good (read as
//! [`Forgettable::Forgotten`]) when the lead asks to be: [`forget_lead`].

use chrono::{DateTime, Utc};
use es_core::pii::{Forgettable, KeyStore, PiiStore};
use es_core::{event, Aggregate, Apply, EventRegistry, EventStore, RegistryError, StoreError};
use serde::{Deserialize, Serialize};

use crate::text::{required, Empty};

/// A sales lead entered the system.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct LeadInitialized {
    /// The lead's name.
    #[pii]
    pub name: Forgettable<String>,
    /// The lead's phone number.
    #[pii]
    pub phone: Forgettable<String>,
}

/// A sales rep contacted the lead.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Contacted;

/// A follow-up call was scheduled.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct FollowupSet {
    /// When to call the lead again.
    pub followup_on: DateTime<Utc>,
}

/// The lead's contact details were corrected or replaced. Both are recorded, changed or not.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct ContactDetailsUpdated {
    /// The lead's name from now on.
    #[pii]
    pub name: Forgettable<String>,
    /// The lead's phone number from now on.
    #[pii]
    pub phone: Forgettable<String>,
}

/// The lead accepted the offer: an order was submitted and awaits payment.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderSubmitted {
    /// When the payment is due.
    pub payment_deadline: DateTime<Utc>,
}

/// The order was paid: the lead converted.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentConfirmed;

/// The order's payment failed; a new order may be submitted.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentFailed;

/// The lead was closed as not interested.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct LeadClosed;

/// Everything that can happen to a lead.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum LeadEvent {
    /// See [`LeadInitialized`].
    Initialized(LeadInitialized),
    /// See [`Contacted`].
    Contacted(Contacted),
    /// See [`FollowupSet`].
    FollowupSet(FollowupSet),
    /// See [`ContactDetailsUpdated`].
    ContactDetailsUpdated(ContactDetailsUpdated),
    /// See [`OrderSubmitted`].
    OrderSubmitted(OrderSubmitted),
    /// See [`PaymentConfirmed`].
    PaymentConfirmed(PaymentConfirmed),
    /// See [`PaymentFailed`].
    PaymentFailed(PaymentFailed),
    /// See [`LeadClosed`].
    Closed(LeadClosed),
}

/// Where an initialized lead is in the sales funnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LeadStatus {
    /// Initialized, no follow-up or order yet.
    NewLead,
    /// A follow-up call is scheduled.
    FollowupSet,
    /// An order was submitted and awaits payment.
    PendingPayment,
    /// The order was paid. Final.
    Converted,
    /// The last order's payment failed.
    PaymentFailed,
    /// Closed as not interested. Final.
    Closed,
}

impl LeadStatus {
    /// The stored name of the status, as serde writes it: `"NEW_LEAD"`, `"FOLLOWUP_SET"`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NewLead => "NEW_LEAD",
            Self::FollowupSet => "FOLLOWUP_SET",
            Self::PendingPayment => "PENDING_PAYMENT",
            Self::Converted => "CONVERTED",
            Self::PaymentFailed => "PAYMENT_FAILED",
            Self::Closed => "CLOSED",
        }
    }

    /// The status stored as `name` (see [`LeadStatus::as_str`]), if any.
    pub fn from_str_name(name: &str) -> Option<Self> {
        [
            Self::NewLead,
            Self::FollowupSet,
            Self::PendingPayment,
            Self::Converted,
            Self::PaymentFailed,
            Self::Closed,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }
}

/// A sales lead's state, folded from its events.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "lead", id = String, event = LeadEvent, snapshot_revision = 2)]
pub struct Lead {
    /// Where the lead is in the funnel; `None` until it is initialized.
    pub status: Option<LeadStatus>,
    /// The lead's current name: `Forgotten` once the lead was forgotten, and also before the
    /// lead is initialized (`Forgettable`'s default; `status` tells the two apart).
    pub name: Forgettable<String>,
    /// The lead's current phone number.
    pub phone: Forgettable<String>,
    /// The follow-up date scheduled, while the lead is `FOLLOWUP_SET`: an order or a close
    /// clears it, as the seed's state table shows (a converted or closed lead has none).
    pub followup_on: Option<DateTime<Utc>>,
    /// The payment deadline of the latest order, if any was submitted. It is recorded for the
    /// sales team (and the read models); the demo domain enforces no rule on it: a payment
    /// confirmed after it still converts the lead.
    pub payment_deadline: Option<DateTime<Utc>>,
    /// How many times the lead was contacted.
    pub contacts: u32,
    /// How many follow-ups were scheduled.
    pub followups: u32,
}

/// Why a lead command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadError {
    /// A lead with this id already exists.
    #[error("the lead is already initialized")]
    AlreadyInitialized,
    /// The command needs a lead, and none with this id was initialized.
    #[error("no lead with this id was initialized")]
    NotInitialized,
    /// The lead converted; it accepts no further commands.
    #[error("the lead already converted")]
    AlreadyConverted,
    /// The lead was closed; it accepts no further commands.
    #[error("the lead is closed")]
    Closed,
    /// A follow-up must be scheduled after the current instant.
    #[error("the follow-up date {followup_on} is not after now ({now})")]
    FollowupNotInFuture {
        /// The requested follow-up date.
        followup_on: DateTime<Utc>,
        /// The instant the command was decided at.
        now: DateTime<Utc>,
    },
    /// An order's payment deadline must be after the current instant.
    #[error("the payment deadline {payment_deadline} is not after now ({now})")]
    DeadlineNotInFuture {
        /// The requested payment deadline.
        payment_deadline: DateTime<Utc>,
        /// The instant the command was decided at.
        now: DateTime<Utc>,
    },
    /// An order awaits payment: confirm or fail it first.
    #[error("an order is awaiting payment")]
    AwaitingPayment,
    /// No order awaits payment, so there is no payment to confirm or fail.
    #[error("no order is awaiting payment")]
    NoPendingOrder,
    /// An order needs the lead to have been contacted at least once.
    #[error("the lead was never contacted")]
    NeverContacted,
    /// The new contact details equal the current ones.
    #[error("the contact details are unchanged")]
    NothingChanged,
    /// A required text was empty.
    #[error(transparent)]
    Empty(#[from] Empty),
}

type Decision = Result<Vec<LeadEvent>, LeadError>;

impl Lead {
    /// The status of a lead that still accepts commands: initialized, neither converted nor
    /// closed.
    fn active_status(&self) -> Result<LeadStatus, LeadError> {
        match self.status {
            None => Err(LeadError::NotInitialized),
            Some(LeadStatus::Converted) => Err(LeadError::AlreadyConverted),
            Some(LeadStatus::Closed) => Err(LeadError::Closed),
            Some(status) => Ok(status),
        }
    }

    /// Succeeds only for an active lead whose order awaits payment.
    fn must_await_payment(&self) -> Result<(), LeadError> {
        if self.active_status()? != LeadStatus::PendingPayment {
            return Err(LeadError::NoPendingOrder);
        }
        Ok(())
    }

    /// Initializes a new lead in status `NEW_LEAD`.
    ///
    /// Rules: a lead is initialized once ([`LeadError::AlreadyInitialized`]); the name and the
    /// phone, trimmed, must not be empty ([`LeadError::Empty`]).
    pub fn initialize(&self, name: &str, phone: &str) -> Decision {
        if self.status.is_some() {
            return Err(LeadError::AlreadyInitialized);
        }
        Ok(vec![LeadInitialized {
            name: required(name, "the name")?.into(),
            phone: required(phone, "the phone")?.into(),
        }
        .into()])
    }

    /// Records that a sales rep contacted the lead. The status does not change.
    ///
    /// Rules: the lead must be initialized ([`LeadError::NotInitialized`]), not converted
    /// ([`LeadError::AlreadyConverted`]) and not closed ([`LeadError::Closed`]).
    pub fn contact(&self) -> Decision {
        self.active_status()?;
        Ok(vec![Contacted.into()])
    }

    /// Schedules a follow-up call on `followup_on`; the status becomes `FOLLOWUP_SET`.
    ///
    /// Rules: the lead must be initialized, not converted and not closed; no order may be awaiting
    /// payment ([`LeadError::AwaitingPayment`]); `followup_on` must be after `now`
    /// ([`LeadError::FollowupNotInFuture`]).
    pub fn schedule_followup(&self, followup_on: DateTime<Utc>, now: DateTime<Utc>) -> Decision {
        if self.active_status()? == LeadStatus::PendingPayment {
            return Err(LeadError::AwaitingPayment);
        }
        if followup_on <= now {
            return Err(LeadError::FollowupNotInFuture { followup_on, now });
        }
        Ok(vec![FollowupSet { followup_on }.into()])
    }

    /// Replaces the lead's name and phone, e.g. to fix a typo or record a new number. The status
    /// does not change.
    ///
    /// Rules: the lead must be initialized, not converted and not closed; the name and the phone,
    /// trimmed, must not be empty ([`LeadError::Empty`]); at least one of them must differ from
    /// the current details ([`LeadError::NothingChanged`]). Once the lead was forgotten, the
    /// store refuses new personal data for it: the command fails with the store's
    /// `PiiError::Keys(KeyStoreError::Forgotten)`, not with a `LeadError`.
    pub fn update_contact_details(&self, name: &str, phone: &str) -> Decision {
        self.active_status()?;
        let name = required(name, "the name")?;
        let phone = required(phone, "the phone")?;
        if self.name.known() == Some(&name) && self.phone.known() == Some(&phone) {
            return Err(LeadError::NothingChanged);
        }
        Ok(vec![ContactDetailsUpdated {
            name: name.into(),
            phone: phone.into(),
        }
        .into()])
    }

    /// Submits an order to be paid by `payment_deadline`; the status becomes `PENDING_PAYMENT`.
    ///
    /// Rules: the lead must be initialized, not converted and not closed; it must be `NEW_LEAD`,
    /// `FOLLOWUP_SET` or `PAYMENT_FAILED`, not awaiting another payment
    /// ([`LeadError::AwaitingPayment`]); it must have been contacted at least once
    /// ([`LeadError::NeverContacted`]); `payment_deadline` must be after `now`
    /// ([`LeadError::DeadlineNotInFuture`]).
    pub fn submit_order(&self, payment_deadline: DateTime<Utc>, now: DateTime<Utc>) -> Decision {
        if self.active_status()? == LeadStatus::PendingPayment {
            return Err(LeadError::AwaitingPayment);
        }
        if self.contacts == 0 {
            return Err(LeadError::NeverContacted);
        }
        if payment_deadline <= now {
            return Err(LeadError::DeadlineNotInFuture { payment_deadline, now });
        }
        Ok(vec![OrderSubmitted { payment_deadline }.into()])
    }

    /// Confirms the pending order's payment; the status becomes `CONVERTED`, which is final.
    ///
    /// Rules: the lead must be initialized, not converted and not closed; an order must be
    /// awaiting payment ([`LeadError::NoPendingOrder`]).
    pub fn confirm_payment(&self) -> Decision {
        self.must_await_payment()?;
        Ok(vec![PaymentConfirmed.into()])
    }

    /// Records that the pending order's payment failed; the status becomes `PAYMENT_FAILED`,
    /// from which a new order may be submitted or the lead closed.
    ///
    /// Rules: the lead must be initialized, not converted and not closed; an order must be
    /// awaiting payment ([`LeadError::NoPendingOrder`]).
    pub fn fail_payment(&self) -> Decision {
        self.must_await_payment()?;
        Ok(vec![PaymentFailed.into()])
    }

    /// Closes the lead as not interested, whatever its status before conversion; the status
    /// becomes `CLOSED`, which is final.
    ///
    /// Rules: the lead must be initialized ([`LeadError::NotInitialized`]), not converted
    /// ([`LeadError::AlreadyConverted`]) and not already closed ([`LeadError::Closed`]).
    pub fn close(&self) -> Decision {
        self.active_status()?;
        Ok(vec![LeadClosed.into()])
    }
}

impl Apply<LeadInitialized> for Lead {
    fn apply(&mut self, event: &LeadInitialized) {
        self.status = Some(LeadStatus::NewLead);
        self.name = event.name.clone();
        self.phone = event.phone.clone();
    }
}

impl Apply<Contacted> for Lead {
    fn apply(&mut self, _: &Contacted) {
        self.contacts += 1;
    }
}

impl Apply<FollowupSet> for Lead {
    fn apply(&mut self, event: &FollowupSet) {
        self.status = Some(LeadStatus::FollowupSet);
        self.followup_on = Some(event.followup_on);
        self.followups += 1;
    }
}

impl Apply<ContactDetailsUpdated> for Lead {
    fn apply(&mut self, event: &ContactDetailsUpdated) {
        self.name = event.name.clone();
        self.phone = event.phone.clone();
    }
}

impl Apply<OrderSubmitted> for Lead {
    fn apply(&mut self, event: &OrderSubmitted) {
        self.status = Some(LeadStatus::PendingPayment);
        self.followup_on = None;
        self.payment_deadline = Some(event.payment_deadline);
    }
}

impl Apply<PaymentConfirmed> for Lead {
    fn apply(&mut self, _: &PaymentConfirmed) {
        self.status = Some(LeadStatus::Converted);
    }
}

impl Apply<PaymentFailed> for Lead {
    fn apply(&mut self, _: &PaymentFailed) {
        self.status = Some(LeadStatus::PaymentFailed);
    }
}

impl Apply<LeadClosed> for Lead {
    fn apply(&mut self, _: &LeadClosed) {
        self.status = Some(LeadStatus::Closed);
        self.followup_on = None;
    }
}

/// The data subject of lead `lead_id`'s personal data: its stream.
pub fn lead_subject(lead_id: &str) -> String {
    format!("{}/{lead_id}", Lead::TYPE)
}

/// Forgets lead `lead_id`'s personal data for good (the lead asked to be forgotten): its name
/// and phone, in every event and snapshot, read as [`Forgettable::Forgotten`] from now on, and
/// the search projection drops the lead's rows. Whether the lead had personal data.
pub async fn forget_lead<S: EventStore, K: KeyStore>(
    store: &PiiStore<S, K>,
    lead_id: &str,
) -> Result<bool, StoreError> {
    store.forget(&lead_subject(lead_id)).await
}

/// `inner` sealing the leads' personal data with keys from `keys` (the PostgreSQL and SQLite
/// stores keep keys in tables of their own, so `keys` may be `inner` itself).
pub fn forgettable_leads<S, K: KeyStore>(inner: S, keys: K) -> Result<PiiStore<S, K>, RegistryError> {
    let mut registry = EventRegistry::new();
    registry.register::<Lead>()?;
    Ok(PiiStore::new(inner, keys, registry))
}
