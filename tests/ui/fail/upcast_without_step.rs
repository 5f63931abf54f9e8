use es_core::event;

#[event(version = 2)]
#[upcast(from = 1)]
pub struct TicketEscalated {
    pub reason: String,
}

fn main() {}
