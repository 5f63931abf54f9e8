use es_core::{event, Aggregate};
use serde::{Deserialize, Serialize};

#[event]
pub struct TicketOpened;

#[event]
pub enum TicketEvent {
    Opened(TicketOpened),
}

#[derive(Default, Serialize, Deserialize, Aggregate)]
#[aggregate(event = TicketEvent, snapshot_revision = 0, id = "String", store = "pg")]
pub struct Ticket;

fn main() {}
