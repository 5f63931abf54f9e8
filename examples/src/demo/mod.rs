//! The runnable demos behind the binaries: `cargo run -p examples` plays both domains,
//! `--bin ticket` or `--bin lead` one of them.

pub mod lead;
pub mod ticket;
