use es_core::event;

#[event]
pub struct TicketOpened;

#[event]
pub struct LeadOpened;

#[event]
pub enum LeadEvent {
    Opened(LeadOpened),
}

/// Returns another aggregate's events.
fn split(_: serde_json::Value) -> Result<Vec<LeadEvent>, es_core::UpcastError> {
    Ok(Vec::new())
}

#[event]
#[replaced(name = "TicketOpenedWithAgent", by = split)]
pub enum TicketEvent {
    Opened(TicketOpened),
}

fn main() {}
