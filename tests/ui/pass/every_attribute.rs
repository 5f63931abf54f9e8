//! Every attribute key of #[event], #[upcast] and #[aggregate], in one program that must compile
//! and behave.
use es_core::{event, Aggregate, Apply, EventSet, EventType, UpcastError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[event(name = "ticket-opened", alias = "TicketInitialized", alias = "TicketCreated", version = 1)]
#[derive(Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TicketOpened {
    pub customer_name: String,
}

/// v1 -> v2 by JSON, v2 -> v3 typed, v3 -> v4 typed into the current type.
#[event(version = 4)]
#[upcast(from = 1, json = v1_to_v2)]
#[upcast(from = 2, typed = EscalatedV2)]
#[upcast(from = 3, typed = EscalatedV3)]
#[derive(Debug, PartialEq)]
pub struct TicketEscalated {
    pub reason: String,
    pub level: u8,
}

fn v1_to_v2(mut payload: Value) -> Result<Value, UpcastError> {
    payload
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("not an object"))?
        .insert("why".into(), "unknown".into());
    Ok(payload)
}

#[derive(Deserialize)]
pub struct EscalatedV2 {
    why: String,
}

#[derive(Deserialize)]
pub struct EscalatedV3 {
    reason: String,
}

impl From<EscalatedV2> for EscalatedV3 {
    fn from(v2: EscalatedV2) -> Self {
        EscalatedV3 { reason: v2.why }
    }
}

impl TryFrom<EscalatedV3> for TicketEscalated {
    type Error = String;
    fn try_from(v3: EscalatedV3) -> Result<Self, String> {
        if v3.reason.is_empty() {
            return Err("empty reason".into());
        }
        Ok(TicketEscalated { reason: v3.reason, level: 1 })
    }
}

#[event]
#[derive(Debug, PartialEq)]
pub struct TicketClosed;

#[event]
#[derive(Debug, PartialEq)]
pub struct TicketRated(pub u8);

#[event]
#[derive(Debug, PartialEq)]
pub enum TicketEvent {
    Opened(TicketOpened),
    Escalated(TicketEscalated),
    Closed(TicketClosed),
    Rated(TicketRated),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TicketId(u32);

impl std::fmt::Display for TicketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "T-{}", self.0)
    }
}

#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "support-ticket", id = TicketId, event = TicketEvent, snapshot_revision = 7)]
pub struct Ticket {
    events: u32,
}

/// Every event counts the same, so one blanket impl covers them all.
impl<E> Apply<E> for Ticket {
    fn apply(&mut self, _: &E) {
        self.events += 1;
    }
}

/// An aggregate that is an enum, with every key left at its default.
#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(event = TicketEvent)]
pub enum TicketPhase {
    #[default]
    New,
    Open,
}

impl<E> Apply<E> for TicketPhase {
    fn apply(&mut self, _: &E) {
        *self = TicketPhase::Open;
    }
}

fn main() {
    assert_eq!(TicketOpened::NAME, "ticket-opened");
    assert_eq!(TicketOpened::ALIASES, ["TicketInitialized", "TicketCreated"]);
    assert_eq!(TicketEscalated::VERSION, 4);
    assert_eq!(<Ticket as Aggregate>::TYPE, "support-ticket");
    assert_eq!(<Ticket as Aggregate>::SNAPSHOT_REVISION, 7);
    assert_eq!(<TicketPhase as Aggregate>::TYPE, "TicketPhase");
    assert_eq!(<TicketPhase as Aggregate>::SNAPSHOT_REVISION, 1);

    let legacy = TicketEvent::decode("TicketCreated", 1, br#"{"customerName":"acme"}"#).unwrap();
    assert_eq!(legacy, TicketEvent::Opened(TicketOpened { customer_name: "acme".into() }));
    let v1 = TicketEscalated::decode_payload(1, b"{}").unwrap();
    assert_eq!(v1, TicketEscalated { reason: "unknown".into(), level: 1 });
    let v3 = TicketEscalated::decode_payload(3, br#"{"reason":"vip"}"#).unwrap();
    assert_eq!(v3.reason, "vip");
    assert!(TicketEscalated::decode_payload(3, br#"{"reason":""}"#).is_err());
    let rated = TicketEvent::decode("TicketRated", 1, b"5").unwrap();
    assert_eq!(rated, TicketEvent::Rated(TicketRated(5)));

    let mut ticket = Ticket::default();
    ticket.apply_event(&TicketClosed.into());
    assert_eq!(ticket.events, 1);
    let mut phase = TicketPhase::default();
    phase.apply_event(&TicketClosed.into());
    assert!(matches!(phase, TicketPhase::Open));
    let _id: <Ticket as Aggregate>::Id = TicketId(1);
}
