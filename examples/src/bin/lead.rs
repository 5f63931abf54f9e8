//! The Lead demo: a sales week over 200 leads, its search and analysis read models, and time
//! travel on one lead. Stores as `cargo run -p examples` does (see `examples::demo::Backend`).

use examples::demo::{lead, Backend, Outcome};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Outcome {
    lead::run(&Backend::choose()?).await
}
