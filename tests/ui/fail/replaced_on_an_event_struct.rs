use es_core::event;

fn split(_: serde_json::Value) -> Result<Vec<TicketEvent>, es_core::UpcastError> {
    Ok(Vec::new())
}

// A rule for a retired event, written on an event struct instead of the enum that reads it.
#[event]
#[replaced(name = "TicketOpenedWithAgent", by = split)]
pub struct TicketOpened;

#[event]
pub enum TicketEvent {
    Opened(TicketOpened),
}

fn main() {}
