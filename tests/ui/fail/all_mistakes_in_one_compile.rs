use es_core::event;

#[event(version = 3, colour = "red", name = "")]
#[upcast(from = 3, json = nothing)]
#[upcast(from = 0, json = nothing)]
pub struct TicketEscalated {
    pub reason: String,
}

fn main() {}
