//! The Ticket and Lead domains from the DDD literature, built on `es-core`.
//!
//! Run both with `cargo run -p examples` (in the SQLite file `es-examples.db`, which the next run
//! continues; on PostgreSQL when `DATABASE_URL` is set; in memory with `-- --memory`), or one
//! with `--bin ticket` / `--bin lead`. See [`demo::Backend`].

pub mod cli;
pub mod demo;
pub mod lead;
pub mod lead_models;
pub mod lead_scenario;
pub mod outbox;
pub mod text;
pub mod ticket;
