use es_core::event;

#[event(alias = "Legacy")]
pub struct TicketOpened;

#[event(alias = "Legacy")]
pub struct TicketClosed;

#[event]
pub enum TicketEvent {
    Opened(TicketOpened),
    Closed(TicketClosed),
}

fn main() {}
