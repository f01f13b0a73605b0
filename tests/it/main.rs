//! Integration tests on real Postgres and real Kafka (`scripts/stack up`).

// Test modules share helpers through `pub` items of a private module.
#![allow(unreachable_pub)]

mod cli;
mod crash;
mod delivery;
mod helpers;
mod operators;
mod outages;
mod stack_support;
mod startup;
mod three_relays;
