use es_core::event;

#[event]
pub struct TicketOpened<'a> {
    pub title: &'a str,
}

fn main() {}
