use es_core::{event, Aggregate};
use serde::{Deserialize, Serialize};

#[event(name = "Ticket Opened")]
pub struct TicketOpened;

#[event(name = "TicketClosed", alias = "ticket\tclosed", alias = " ")]
pub struct TicketClosed;

#[event(name = "TicketRéopened")]
pub struct TicketReopened;

#[event]
pub enum TicketEvent {
    Opened(TicketOpened),
}

#[derive(Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "help desk ticket", event = TicketEvent)]
pub struct Ticket;

impl es_core::Apply<TicketOpened> for Ticket {
    fn apply(&mut self, _: &TicketOpened) {}
}

fn main() {}
