use es_core::event;

#[event(alias = "TicketCreated")]
pub struct TicketOpened;

fn split(_: serde_json::Value) -> Result<Vec<TicketEvent>, es_core::UpcastError> {
    Ok(Vec::new())
}

#[event]
#[replaced(name = "TicketCreated", by = split)]
pub enum TicketEvent {
    Opened(TicketOpened),
}

fn main() {}
