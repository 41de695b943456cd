//! Abuse limits on writes (POST): per user and per client IP, token buckets
//! from `governor`. Defaults no real shopper meets (a burst of 200 writes,
//! then 100 a second, per user; 20,000 then 10,000 a second per IP), so
//! tests and load runs are unaffected unless they set tighter limits.
//! Over the limit: 429 `RATE_LIMITED` with `Retry-After`.

use crate::problem::{ApiCode, ApiError};
use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use shop_proto::values::UserId;
use shop_runtime::{ConfigError, Env};
use std::net::IpAddr;
use std::num::NonZeroU32;

/// The limiters of one gateway.
pub struct Limits {
    per_user: DefaultKeyedRateLimiter<UserId>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits {
    /// Reads `GATEWAY_RATE_LIMIT_{USER,IP}_{PER_S,BURST}`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let quota = |rate: &str, burst: &str, default_rate: u32, default_burst: u32| {
            let per_second: u32 = env.parse_or(rate, default_rate)?;
            let burst_size: u32 = env.parse_or(burst, default_burst)?;
            let per_second = NonZeroU32::new(per_second)
                .ok_or_else(|| env.invalid(rate, "0", "must be greater than 0"))?;
            let burst_size = NonZeroU32::new(burst_size)
                .ok_or_else(|| env.invalid(burst, "0", "must be greater than 0"))?;
            Ok::<_, ConfigError>(Quota::per_second(per_second).allow_burst(burst_size))
        };
        Ok(Self {
            per_user: RateLimiter::keyed(quota(
                "RATE_LIMIT_USER_PER_S",
                "RATE_LIMIT_USER_BURST",
                100,
                200,
            )?),
            per_ip: RateLimiter::keyed(quota(
                "RATE_LIMIT_IP_PER_S",
                "RATE_LIMIT_IP_BURST",
                10_000,
                20_000,
            )?),
        })
    }

    /// Drops the state of clients whose bucket is full again (they have
    /// been quiet long enough), so the maps do not grow without bound.
    pub fn forget_idle(&self) {
        self.per_user.retain_recent();
        self.per_user.shrink_to_fit();
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
    }

    /// One write by `user`.
    pub fn user_write(&self, user: UserId) -> Result<(), ApiError> {
        self.per_user
            .check_key(&user)
            .map_err(|wait| limited(wait.wait_time_from(DefaultClock::default().now())))
    }

    /// One write from `ip`.
    pub fn ip_write(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.per_ip
            .check_key(&ip)
            .map_err(|wait| limited(wait.wait_time_from(DefaultClock::default().now())))
    }
}

fn limited(wait: std::time::Duration) -> ApiError {
    let seconds = wait.as_secs() + 1;
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ApiCode::RateLimited,
        format!("too many writes; retry in {seconds} s"),
    )
    .with_retry_after(seconds)
}
