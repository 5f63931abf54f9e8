use es_core::event;

#[event]
pub struct TicketOpened;

#[event]
pub struct TicketClosed;

#[event]
pub enum TicketEvent {
    Opened(TicketOpened),
    Closed(Box<TicketClosed>),
}

fn main() {}
