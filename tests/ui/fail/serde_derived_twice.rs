use es_core::event;
use serde::{Deserialize, Serialize};

#[event]
#[derive(Debug, Serialize, Deserialize)]
pub struct TicketOpened {
    pub title: String,
}

fn main() {}
