//! The event registry: listing every (aggregate type, event name, schema version) of a program,
//! resolving aliases, and refusing two aggregates stored under one type name.

use es_core::{event, Aggregate, Apply, EventRegistry, EventSet, RegistryError};
use serde::{Deserialize, Serialize};

mod billing {
    use super::*;

    #[event(name = "InvoiceIssued", alias = "InvoiceCreated", version = 2)]
    #[upcast(from = 1, json = keep)]
    pub struct InvoiceIssued {
        pub cents: u64,
    }

    fn keep(v: serde_json::Value) -> Result<serde_json::Value, es_core::UpcastError> {
        Ok(v)
    }

    #[event]
    pub struct InvoicePaid;

    #[event]
    pub enum InvoiceEvent {
        Issued(InvoiceIssued),
        Paid(InvoicePaid),
    }

    #[derive(Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "invoice", event = InvoiceEvent)]
    pub struct Invoice;

    impl<E> Apply<E> for Invoice {
        fn apply(&mut self, _: &E) {}
    }
}

/// Another crate's aggregate that happens to use the same stored type name.
mod legacy {
    use super::*;

    #[event(name = "InvoiceIssued")]
    pub struct LegacyInvoiceIssued;

    #[event]
    pub enum LegacyEvent {
        Issued(LegacyInvoiceIssued),
    }

    #[derive(Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "invoice", event = LegacyEvent)]
    pub struct LegacyInvoice;

    impl Apply<LegacyInvoiceIssued> for LegacyInvoice {
        fn apply(&mut self, _: &LegacyInvoiceIssued) {}
    }

    #[derive(Default, Serialize, Deserialize, Aggregate)]
    #[aggregate(name = "archive", event = LegacyEvent)]
    pub struct Archive;

    impl Apply<LegacyInvoiceIssued> for Archive {
        fn apply(&mut self, _: &LegacyInvoiceIssued) {}
    }
}

#[test]
fn lists_every_aggregate_event_and_version() {
    let mut registry = EventRegistry::new();
    registry
        .register::<billing::Invoice>()
        .and_then(|r| r.register::<legacy::Archive>())
        .expect("distinct aggregate types");
    let listed: Vec<_> = registry
        .events()
        .map(|e| (e.aggregate_type, e.event.name, e.event.version))
        .collect();
    assert_eq!(
        listed,
        [
            ("archive", "InvoiceIssued", 1),
            ("invoice", "InvoiceIssued", 2),
            ("invoice", "InvoicePaid", 1)
        ],
        "the same event name in two aggregate types is no clash: names are scoped by type"
    );
}

#[test]
fn finds_events_by_name_or_alias() {
    let mut registry = EventRegistry::new();
    registry.register::<billing::Invoice>().expect("register");
    let by_alias = registry.find("invoice", "InvoiceCreated").expect("alias resolves");
    assert_eq!(
        (by_alias.event.name, by_alias.event.rust_type),
        ("InvoiceIssued", "InvoiceIssued")
    );
    assert!(registry.find("invoice", "InvoiceVoided").is_none());
    assert!(
        registry.find("archive", "InvoiceIssued").is_none(),
        "archive is not registered"
    );
    assert!(billing::InvoiceEvent::handles("InvoiceCreated"));
    assert!(!billing::InvoiceEvent::handles("Unknown"));
}

#[test]
fn two_aggregates_under_one_type_name_are_refused() {
    let mut registry = EventRegistry::new();
    registry.register::<billing::Invoice>().expect("first");
    registry
        .register::<billing::Invoice>()
        .expect("the same type again is harmless");
    let clash = registry.register::<legacy::LegacyInvoice>().map(|_| ());
    match clash {
        Err(RegistryError::DuplicateAggregateType {
            aggregate_type,
            first,
            second,
        }) => {
            assert_eq!(aggregate_type, "invoice");
            assert!(first.ends_with("billing::Invoice"), "{first}");
            assert!(second.ends_with("legacy::LegacyInvoice"), "{second}");
        }
        other => panic!("expected a clash, got {other:?}"),
    }
    let message = registry
        .register::<legacy::LegacyInvoice>()
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("#[aggregate(name"),
        "the message names the fix: {message}"
    );
}
