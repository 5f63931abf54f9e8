use es_core::Aggregate;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize, Aggregate)]
#[aggregate(name = "ticket")]
pub struct Ticket {
    open: bool,
}

fn main() {}
