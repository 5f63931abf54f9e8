use es_core::{event, Aggregate};
use serde::{Deserialize, Serialize};

#[event]
pub struct TicketOpened;

#[derive(Default, Serialize, Deserialize, Aggregate)]
#[aggregate(event = TicketOpened)]
pub struct Ticket;

fn main() {}
