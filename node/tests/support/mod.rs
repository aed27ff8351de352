//! Test support shared by the node's integration tests: `mod support;` in a test file.
//!
//! - [`dashboard`]: check `dashboards/hearsay.json` against a real Prometheus scraping a list
//!   of `/metrics` addresses ([`dashboard::check_dashboard`]).
//! - [`standin`]: small HTTP servers serving [`hearsay::metrics::Metrics`] text, stand-ins for
//!   agents until the dashboard test runs against real ones.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub(crate) mod dashboard;
pub(crate) mod promql;
pub(crate) mod standin;
