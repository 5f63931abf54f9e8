use es_core::event;

#[event]
pub struct TicketOpened;

#[event]
pub enum TicketEvent {
    Opened(TicketOpened),
    Closed { at: String },
    Reopened,
}

fn main() {}
