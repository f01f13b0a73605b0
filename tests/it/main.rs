//! Integration tests on real Postgres and real Kafka (`scripts/stack up`).

// Test modules share helpers through `pub` items of a private module.
#![allow(unreachable_pub)]

mod bench_smoke;
mod catalogue;
mod cli;
mod crash;
mod delivery;
mod failure_support;
mod failures;
mod helpers;
mod mock_cluster;
mod operators;
mod outages;
mod registry_support;
mod serialization;
mod serialization_failures;
mod serialization_keys;
mod stack_support;
mod startup;
mod three_relays;
