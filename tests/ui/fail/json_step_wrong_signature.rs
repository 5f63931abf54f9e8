use es_core::event;

fn add_reason(payload: String) -> String {
    payload
}

#[event(version = 2)]
#[upcast(from = 1, json = add_reason)]
pub struct TicketEscalated {
    pub reason: String,
}

fn main() {}
