//! The Ticket and Lead domains from the DDD literature, built on `es-core`.
//!
//! Run them with `cargo run -p examples --bin ticket` (in memory, or on PostgreSQL when
//! `DATABASE_URL` is set).

pub mod lead;
pub mod lead_models;
pub mod lead_scenario;
pub mod ticket;
