//! What the review suites (`*_review.rs`) share: fresh stores and raw events, a projection
//! runner running until stopped, the `es` command line as an operator runs it.
//!
//! Each test file is a crate of its own and uses only some of it, hence `dead_code` allowed.
#![allow(dead_code)]

pub mod cli;
pub mod running;
pub mod stores;
pub mod tickets;
