use es_core::event;

#[event]
pub struct TicketOpened;

#[event]
pub enum TicketEvent {
    Opened(TicketOpened),
    Created(TicketOpened),
}

fn main() {}
