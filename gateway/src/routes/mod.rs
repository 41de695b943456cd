//! HTTP handlers, one module per resource, sharing [`AppState`].

pub mod accounts;
pub mod ops;
pub mod orders;
pub mod ui;

use crate::upstream::Upstreams;
use metrics_exporter_prometheus::PrometheusHandle;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub upstreams: Upstreams,
    pub metrics: PrometheusHandle,
    pub sse_keepalive: Duration,
    /// Cancelled on shutdown: ends open event streams so draining finishes.
    pub shutdown: CancellationToken,
}
