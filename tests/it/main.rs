//! Integration tests on real Postgres and real Kafka (`scripts/stack up`). The heavy fault tests
//! (services killed, relays killed) are the `faults` binary, run one at a time.

// Test modules share the harness through `pub` items of a private module.
#![allow(unreachable_pub)]

#[allow(dead_code, unused_imports)] // each binary uses part of the harness
#[path = "../support/mod.rs"]
mod harness;

mod batch_refusals;
mod bench_smoke;
mod catalogue;
mod claim;
mod cli;
mod delete_on_delivery;
mod delivery;
mod deploy;
mod exact_numbers;
mod failures;
mod kafka_security;
mod limits;
mod mock_cluster;
mod operations;
mod operators;
mod order_verdict;
mod pg_tls;
mod publish;
mod references;
mod registry_compat;
mod registry_verdicts;
mod retention;
mod roles;
mod secrets;
mod serialization;
mod serialization_failures;
mod serialization_keys;
mod startup;
mod topic_prechecks;
