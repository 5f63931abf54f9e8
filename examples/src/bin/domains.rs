//! Both demos, one after the other: `cargo run -p examples`. In memory, or on PostgreSQL when
//! `DATABASE_URL` is set.

#[tokio::main(flavor = "current_thread")]
async fn main() -> examples::demo::ticket::Outcome {
    examples::demo::ticket::run().await?;
    println!("\n{}\n", "=".repeat(100));
    examples::demo::lead::run().await
}
