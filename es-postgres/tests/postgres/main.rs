//! The PostgreSQL store against a real server: `DATABASE_URL`, or one throwaway server started
//! for this test process (see `es_test_support`). All suites live in this one binary so
//! that one server serves the whole run; every test works in its own fresh schema.

mod support;

mod domain;

mod appends;
mod bad_data;
mod blue_green;
mod catalog;
mod claim_faults;
mod claim_status;
mod conformance;
mod connect;
mod failures;
mod idempotency;
mod import;
mod limits;
mod migrations;
mod pii;
mod projection_faults;
mod properties;
mod read_all;
mod read_filtered;
mod reliability;
mod repository;
mod short_units;
mod tenant_read_models;
mod wake_up;
