//! Both demos, one after the other: `cargo run -p examples`. In a SQLite file by default
//! (`es-examples.db`, or `--db PATH` / `ES_EXAMPLES_DB`), which the next run continues; on
//! PostgreSQL when `DATABASE_URL` is set; in memory with `--memory`.

use examples::demo::{lead, ticket, Backend, Outcome};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Outcome {
    let backend = Backend::choose()?;
    ticket::run(&backend).await?;
    println!("\n{}\n", "=".repeat(100));
    lead::run(&backend).await
}
