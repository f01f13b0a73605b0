//! Fault tests: Kafka brokers (alone, or in a three-broker cluster) and PostgreSQL clusters
//! killed under load, relay binaries killed with -9 and stopped mid-run, three relays with one
//! killed every 1–2 s. They load the whole machine and some stop shared resources of their
//! own, so `scripts/test` runs this binary after the `it` binary with `--test-threads=1`: one
//! at a time, nothing else beside them.

#![allow(unreachable_pub)]

#[allow(dead_code, unused_imports)] // each binary uses part of the harness
#[path = "../support/mod.rs"]
mod harness;

mod cluster;
mod crash;
mod outages;
mod readiness;
mod three_relays;
