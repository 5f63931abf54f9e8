use es_core::{event, Aggregate, Apply};
use serde::{Deserialize, Serialize};

#[event]
pub struct TicketOpened {
    pub title: String,
}

#[event]
pub struct TicketClosed;

#[event]
pub enum TicketEvent {
    Opened(TicketOpened),
    Closed(TicketClosed),
}

#[derive(Default, Serialize, Deserialize, Aggregate)]
#[aggregate(event = TicketEvent)]
pub struct Ticket {
    open: bool,
}

impl Apply<TicketOpened> for Ticket {
    fn apply(&mut self, _: &TicketOpened) {
        self.open = true;
    }
}

fn main() {}
