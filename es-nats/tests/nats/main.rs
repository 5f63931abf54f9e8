//! The NATS store against real `nats-server` processes that the tests start themselves: one
//! node, and a three-node JetStream cluster (replicas 3). All suites live in this one binary,
//! which shares one single node and one cluster among its tests; every test has a store of its
//! own (a unique prefix) on them.

mod support;

mod checkpoints;
mod conformance;
mod partitions;
mod projection;
mod reliability;
