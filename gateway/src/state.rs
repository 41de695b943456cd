//! What every handler can reach: the upstream clients, the token checks,
//! the limits, the metrics handle and the shutdown signal.

use crate::GatewayConfig;
use crate::auth::Auth;
use crate::limits::Limits;
use crate::upstream::Upstreams;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
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
    /// Checks (and in dev mode issues) bearer tokens.
    pub auth: Arc<Auth>,
    /// Abuse limits on writes.
    pub limits: Arc<Limits>,
}

impl AppState {
    /// The state of a gateway configured by `config`.
    pub fn new(config: &GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        Ok(Self {
            upstreams: Upstreams::new(config)?,
            metrics: crate::metrics::handle(),
            sse_keepalive: config.sse_keepalive,
            shutdown,
            auth: Arc::new(config.auth.clone()),
            limits: Arc::clone(&config.limits),
        })
    }
}
