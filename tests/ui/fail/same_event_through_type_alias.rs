use es_core::event;

#[event]
pub struct TicketOpened;

pub type Opened = TicketOpened;

#[event]
pub enum TicketEvent {
    Opened(TicketOpened),
    Created(Opened),
}

fn main() {}
