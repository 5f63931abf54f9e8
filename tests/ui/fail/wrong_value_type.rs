use es_core::event;

#[event(name = TicketOpened, version = "2")]
pub struct TicketOpened;

fn main() {}
