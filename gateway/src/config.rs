//! Typed configuration from `GATEWAY_*` environment variables.

use crate::auth::Auth;
use crate::limits::Limits;
use shop_runtime::{ConfigError, Env, LogFormat};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The variable prefix.
pub const PREFIX: &str = "GATEWAY_";

/// Everything the gateway reads at start.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `GATEWAY_LISTEN_ADDR` (default `0.0.0.0:8080`).
    pub listen_addr: SocketAddr,
    /// `GATEWAY_ORDERS_URL` (default `http://127.0.0.1:50051`); several
    /// replicas comma-separated, calls balanced over them.
    pub orders_url: String,
    /// `GATEWAY_PAYMENTS_URL` (default `http://127.0.0.1:50052`); several
    /// replicas comma-separated.
    pub payments_url: String,
    /// `GATEWAY_UPSTREAM_TIMEOUT_MS`: deadline of each gRPC call (default 5000).
    pub upstream_timeout: Duration,
    /// `GATEWAY_REQUEST_TIMEOUT_MS`: deadline of each HTTP request (default 10000).
    pub request_timeout: Duration,
    /// `GATEWAY_SSE_KEEPALIVE_MS`: comment interval on event streams (default 15000).
    pub sse_keepalive: Duration,
    /// `GATEWAY_LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// `GATEWAY_AUTH`, `GATEWAY_JWT_*`: how callers are authenticated.
    pub auth: Auth,
    /// `GATEWAY_RATE_LIMIT_*`: abuse limits on writes.
    pub limits: Arc<Limits>,
}

impl GatewayConfig {
    /// Reads and checks every variable; a bad one is named in the error.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let default_addr = SocketAddr::from(([0, 0, 0, 0], 8080));
        // One URL, or several replicas' URLs separated by commas.
        let url = |name: &str, default: &str| {
            let value = env.string_or(name, default);
            let each_ok = value
                .split(',')
                .map(str::trim)
                .all(|u| u.starts_with("http://") || u.starts_with("https://"));
            if each_ok {
                Ok(value)
            } else {
                Err(env.invalid(
                    name,
                    &value,
                    "each comma-separated URL must start with http:// or https://",
                ))
            }
        };
        Ok(Self {
            listen_addr: env.parse_or("LISTEN_ADDR", default_addr)?,
            orders_url: url("ORDERS_URL", "http://127.0.0.1:50051")?,
            payments_url: url("PAYMENTS_URL", "http://127.0.0.1:50052")?,
            upstream_timeout: env.millis_or("UPSTREAM_TIMEOUT_MS", Duration::from_secs(5))?,
            request_timeout: env.millis_or("REQUEST_TIMEOUT_MS", Duration::from_secs(10))?,
            sse_keepalive: env.millis_or("SSE_KEEPALIVE_MS", Duration::from_secs(15))?,
            log_format: env.parse_or("LOG_FORMAT", LogFormat::Text)?,
            auth: Auth::from_env(env)?,
            limits: Arc::new(Limits::from_env(env)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_named_errors() {
        let cfg = GatewayConfig::from_env(&Env::from_pairs(PREFIX, [("GATEWAY_AUTH", "dev")]))
            .expect("defaults");
        assert_eq!(cfg.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(cfg.orders_url, "http://127.0.0.1:50051");
        for (var, value) in [
            ("GATEWAY_LISTEN_ADDR", "x"),
            ("GATEWAY_ORDERS_URL", "127.0.0.1:50051"),
            ("GATEWAY_UPSTREAM_TIMEOUT_MS", "0"),
        ] {
            let env = Env::from_pairs(PREFIX, [(var, value), ("GATEWAY_AUTH", "dev")]);
            let err = GatewayConfig::from_env(&env).expect_err(var);
            assert_eq!(err.var, var);
        }
    }
}
