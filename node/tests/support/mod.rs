//! Test support shared by the node's integration tests: `mod support;` in a test file.
//!
//! - [`dashboard`]: check `dashboards/hearsay.json` against a real Prometheus scraping a list
//!   of `/metrics` addresses ([`dashboard::check_dashboard`]).
//! - [`cluster`]: real agents in this process, each serving its HTTP API (and `/metrics`) on
//!   its own loopback port ([`cluster::Cluster`]).
//! - [`promql`]: the dashboard's expressions and variables, and the metric names they read.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub(crate) mod cluster;
pub(crate) mod dashboard;
pub(crate) mod promql;
