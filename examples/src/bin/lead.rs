//! The Lead demo: a sales week over many leads, the search and analysis read models, and time
//! travel. In memory, or on PostgreSQL when `DATABASE_URL` is set.

#[tokio::main(flavor = "current_thread")]
async fn main() -> examples::demo::lead::Outcome {
    examples::demo::lead::run().await
}
