use es_core::event;

#[event(name = "TicketOpened")]
pub struct TicketOpened;

#[event(name = "TicketOpened")]
pub struct TicketCreated;

#[event]
pub enum TicketEvent {
    Opened(TicketOpened),
    Created(TicketCreated),
}

fn main() {}
