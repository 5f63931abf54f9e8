use es_core::event;

#[event(nmae = "TicketOpened")]
pub struct TicketOpened;

fn main() {}
