//! The Ticket and Lead domains from the DDD literature, built on `es-core`.
//!
//! Run both with `cargo run -p examples` (in memory, or on PostgreSQL when `DATABASE_URL` is
//! set), or one with `--bin ticket` / `--bin lead`.

pub mod demo;
pub mod lead;
pub mod lead_models;
pub mod lead_scenario;
pub mod ticket;
