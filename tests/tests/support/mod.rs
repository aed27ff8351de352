//! Support for the dashboard check: `mod support;` in a test file.
//!
//! - [`dashboard`]: check `dashboards/hearsay.json` against a real Prometheus scraping a list
//!   of `/metrics` addresses ([`dashboard::check_dashboard_file`]).
//! - [`promql`]: the dashboard's expressions and variables, and the metric names they read.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub(crate) mod dashboard;
pub(crate) mod promql;
