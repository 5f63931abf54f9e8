use es_core::event;

#[event]
pub struct TicketOpened {
    pub title: &'static str,
    pub tags: Vec<&'static str>,
}

fn main() {}
