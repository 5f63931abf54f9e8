//! The Ticket demo: a ticket's life, its stored events with metadata, and its state at every
//! version. Stores as `cargo run -p examples` does (see `examples::demo::Backend`).

use examples::demo::{ticket, Backend, Outcome};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Outcome {
    ticket::run(&Backend::choose()?).await
}
