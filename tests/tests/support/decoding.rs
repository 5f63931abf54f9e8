//! The event set of the decoder property tests (`decode_properties.rs`): events of every kind
//! `#[event]` generates decoders for, with JSON, typed and mixed upcast chains, two of them
//! sloppy on purpose (their steps panic on payloads they do not expect).

use es_core::{event, Aggregate, Apply, UpcastError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The current version only, with fields of many kinds.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Noted {
    pub text: String,
    pub count: i64,
    pub tags: Vec<String>,
    pub inner: Option<Inner>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inner {
    pub level: u8,
    pub flag: bool,
}

/// A unit struct: stored as `null`.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Closed;

/// A newtype: stored as the string.
#[event]
#[derive(Debug, Clone, PartialEq)]
pub struct Tagged(pub String);

/// Renamed twice; a JSON step from 1, a typed step from 2.
#[event(name = "Escalated", alias = "EscalationRequested", alias = "Raised", version = 3)]
#[upcast(from = 1, json = v1_add_reason)]
#[upcast(from = 2, typed = EscalatedV2)]
#[derive(Debug, Clone, PartialEq)]
pub struct Escalated {
    pub reason: String,
    pub level: u8,
}

fn v1_add_reason(mut v1: Value) -> Result<Value, UpcastError> {
    let fields = v1
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("expected an object"))?;
    fields.entry("reason").or_insert_with(|| "not recorded".into());
    Ok(v1)
}

#[derive(Deserialize)]
pub struct EscalatedV2 {
    reason: String,
}

impl From<EscalatedV2> for Escalated {
    fn from(v2: EscalatedV2) -> Self {
        Self {
            reason: v2.reason,
            level: 1,
        }
    }
}

/// Three JSON steps, two of them sloppy: they index the payload as an object without looking
/// (`value["key"] = ...` panics on an array or a number) and multiply without checking.
#[event(version = 4)]
#[upcast(from = 1, json = rename_amount)]
#[upcast(from = 2, json = sloppy_add_currency)]
#[upcast(from = 3, json = sloppy_cents)]
#[derive(Debug, Clone, PartialEq)]
pub struct Paid {
    pub cents: i64,
    pub currency: String,
}

fn rename_amount(mut v1: Value) -> Result<Value, UpcastError> {
    let fields = v1
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("expected an object"))?;
    let amount = fields
        .remove("amount")
        .ok_or_else(|| UpcastError::missing_field("amount"))?;
    fields.insert("units".into(), amount);
    Ok(v1)
}

fn sloppy_add_currency(mut v2: Value) -> Result<Value, UpcastError> {
    v2["currency"] = "EUR".into();
    Ok(v2)
}

fn sloppy_cents(mut v3: Value) -> Result<Value, UpcastError> {
    let units = v3["units"]
        .as_i64()
        .ok_or_else(|| UpcastError::missing_field("units"))?;
    let cents = units * 100; // overflows (and panics, in a debug build) past i64::MAX / 100
    v3["cents"] = cents.into();
    Ok(v3)
}

/// Typed steps only: a fallible one, then one that panics on a value it does not expect.
#[event(version = 3)]
#[upcast(from = 1, typed = MovedV1)]
#[upcast(from = 2, typed = MovedV2)]
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    pub to: String,
    pub floor: u8,
}

#[derive(Deserialize)]
pub struct MovedV1 {
    room: u32,
}

#[derive(Deserialize)]
pub struct MovedV2 {
    to: String,
    floor: i64,
}

impl TryFrom<MovedV1> for MovedV2 {
    type Error = String;

    fn try_from(v1: MovedV1) -> Result<Self, String> {
        match v1.room {
            0 => Err("room 0 does not exist".into()),
            room => Ok(Self {
                to: format!("room {room}"),
                floor: i64::from(room / 100),
            }),
        }
    }
}

impl From<MovedV2> for Moved {
    fn from(v2: MovedV2) -> Self {
        let floor = u8::try_from(v2.floor).expect("a floor fits a u8");
        Self { to: v2.to, floor }
    }
}

#[event]
#[derive(Debug, Clone, PartialEq)]
pub enum PropEvent {
    Noted(Noted),
    Closed(Closed),
    Tagged(Tagged),
    Escalated(Escalated),
    Paid(Paid),
    Moved(Moved),
}

#[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "prop", event = PropEvent)]
pub struct Prop {
    events: u64,
}

macro_rules! count_all {
    ($($event:ty),*) => {$(
        impl Apply<$event> for Prop {
            fn apply(&mut self, _: &$event) {
                self.events += 1;
            }
        }
    )*};
}
count_all!(Noted, Closed, Tagged, Escalated, Paid, Moved);
