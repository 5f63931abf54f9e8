//! Events declared by an application's own `macro_rules!`, with the upcast steps and `#[replaced]`
//! rules handed in from outside it, decode like events written by hand. The paths the steps name
//! come from another hygiene context than the `#[event]` the macro writes, and the generated code
//! must not mix the two.

use es_core::{event, Decoded, EventSet, UpcastError};
use serde::Deserialize;
use serde_json::{json, Value};

/// Declares an event at version 3 whose attributes (its upcasts) the caller writes.
macro_rules! priced_event {
    ($(#[$attr:meta])*) => {
        #[event(name = "Priced", version = 3)]
        $(#[$attr])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct Priced {
            pub cents: u64,
        }
    };
}

/// Declares the event enum, with the enum attributes (its `#[replaced]` rules) the caller writes.
macro_rules! price_events {
    ($(#[$attr:meta])*) => {
        #[event]
        #[derive(Debug, Clone, PartialEq)]
        $(#[$attr])*
        pub enum PriceEvent {
            Priced(Priced),
        }
    };
}

/// Version 1 stored whole dollars as `dollars`.
fn dollars_to_cents(payload: Value) -> Result<Value, UpcastError> {
    let dollars = payload["dollars"]
        .as_u64()
        .ok_or_else(|| UpcastError::missing_field("dollars"))?;
    Ok(json!({ "cents_text": (dollars * 100).to_string() }))
}

/// Version 2 stored the cents as text.
#[derive(Deserialize)]
pub struct PricedV2 {
    cents_text: String,
}

impl TryFrom<PricedV2> for Priced {
    type Error = std::num::ParseIntError;

    fn try_from(old: PricedV2) -> Result<Self, Self::Error> {
        Ok(Self {
            cents: old.cents_text.parse()?,
        })
    }
}

/// A retired `Discounted` event: stored ones now read as a price of zero and the price they named.
fn discounted(payload: Value) -> Result<Vec<PriceEvent>, UpcastError> {
    let cents = payload["cents"]
        .as_u64()
        .ok_or_else(|| UpcastError::missing_field("cents"))?;
    Ok(vec![Priced { cents: 0 }.into(), Priced { cents }.into()])
}

priced_event!(
    #[upcast(from = 1, json = dollars_to_cents)]
    #[upcast(from = 2, typed = PricedV2)]
);
price_events!(#[replaced(name = "Discounted", by = discounted)]);

fn decode(name: &str, version: u32, payload: Value) -> Vec<PriceEvent> {
    let bytes = serde_json::to_vec(&payload).expect("JSON");
    match PriceEvent::decode_all(name, version, &bytes) {
        Ok(Decoded::One(event)) => vec![event],
        Ok(Decoded::Many(events)) => events,
        Err(error) => panic!("{name} v{version} does not decode: {error}"),
    }
}

#[test]
fn every_stored_version_decodes_through_the_steps_handed_in() {
    let priced = |cents| PriceEvent::Priced(Priced { cents });
    assert_eq!(decode("Priced", 3, json!({ "cents": 250 })), [priced(250)]);
    assert_eq!(decode("Priced", 2, json!({ "cents_text": "250" })), [priced(250)]);
    assert_eq!(decode("Priced", 1, json!({ "dollars": 3 })), [priced(300)]);
    assert_eq!(decode("Discounted", 1, json!({ "cents": 99 })), [priced(0), priced(99)]);
}
