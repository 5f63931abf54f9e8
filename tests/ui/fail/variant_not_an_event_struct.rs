use es_core::event;
use serde::{Deserialize, Serialize};

#[event]
pub struct TicketOpened;

#[derive(Serialize, Deserialize)]
pub struct TicketReopened;

#[derive(Serialize, Deserialize)]
pub enum Priority {
    Low,
    High,
}

#[event]
pub enum TicketEvent {
    Opened(TicketOpened),
    Reopened(TicketReopened),
    Prioritised(Priority),
}

fn main() {}
