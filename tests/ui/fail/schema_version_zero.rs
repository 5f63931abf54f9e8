use es_core::event;

#[event(version = 0)]
pub struct TicketOpened;

fn main() {}
