//! The Ticket demo: a ticket's life, its stored events with metadata, and its state at every
//! version. In memory, or on PostgreSQL when `DATABASE_URL` is set.

#[tokio::main(flavor = "current_thread")]
async fn main() -> examples::demo::ticket::Outcome {
    examples::demo::ticket::run().await
}
