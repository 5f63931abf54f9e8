//! The SQLite store, each test on a fresh file in a temporary directory. All suites live in
//! this one binary, which the multi-process tests also run as their child processes.

mod support;

mod appends;
mod bad_files;
mod blue_green;
mod catalog;
mod claims;
mod conformance;
mod lifecycle;
mod limits;
mod migrations;
mod multi_process;
mod parking;
mod pii;
mod projection;
mod properties;
mod read_filtered;
mod reliability;
mod repository;
mod transaction;
mod wake_up;
