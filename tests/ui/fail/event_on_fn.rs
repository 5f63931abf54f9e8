use es_core::event;

#[event]
fn ticket_opened() {}

fn main() {}
