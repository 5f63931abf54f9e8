//! An event enum may derive what enums legitimately derive, serde included (e.g. to send
//! events over a wire format of the application's own), and uses it as usual.
use es_core::{event, EventSet};
use serde::{Deserialize, Serialize};

#[event]
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TicketOpened {
    pub title: String,
}

#[event]
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum TicketEvent {
    Opened(TicketOpened),
}

fn main() {
    let event = TicketEvent::from(TicketOpened { title: "Printer".into() });
    let wire = serde_json::to_string(&event).unwrap();
    assert_eq!(wire, r#"{"type":"Opened","title":"Printer"}"#);
    let back: TicketEvent = serde_json::from_str(&wire).unwrap();
    assert_eq!(back, event);
    assert_eq!(event.event_name(), "TicketOpened");
}
