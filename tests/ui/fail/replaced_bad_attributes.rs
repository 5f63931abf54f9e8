use es_core::event;

#[event]
pub struct TicketOpened;

fn split(_: serde_json::Value) -> Result<Vec<TicketEvent>, es_core::UpcastError> {
    Ok(Vec::new())
}

#[event]
#[replaced(name = "TicketOpenedWithAgent")]
#[replaced(name = "ticket opened", by = split)]
#[replaced(name = "TicketNoted", version = 0, by = split)]
#[replaced(name = "TicketClosed", by = split)]
#[replaced(name = "TicketClosed", version = 1, by = split)]
#[replaced(name = "TicketMoved", with = split)]
pub enum TicketEvent {
    Opened(TicketOpened),
}

fn main() {}
