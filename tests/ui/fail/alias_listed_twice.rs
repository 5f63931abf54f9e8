use es_core::event;

#[event(name = "TicketOpened", alias = "TicketCreated", alias = "TicketCreated", alias = "TicketOpened")]
pub struct TicketOpened;

fn main() {}
