//! The Postgres connection pools, built from typed config (`DATABASE_*`) and
//! checked at start so that an unreachable database is a clear error, not a
//! panic later.
//!
//! A service has three pools, so that one kind of work can never take the
//! connections another needs:
//! - [`connect`]: the pipeline's (inbox batches, retention, gauges), whose
//!   inbox batches also go through [`CallClient`];
//! - [`connect_for_api`]: the gRPC API's, whose sessions also have a short
//!   `lock_timeout` and `statement_timeout`, used through [`CallClient`] so a
//!   call that gives up cancels its statement;
//! - [`connect_for_relay`]: the relay's bookkeeping.
//!
//! Every session has a bounded blast radius: a `statement_timeout`, an
//! `idle_in_transaction_session_timeout` (a replica frozen mid-transaction
//! loses its locks in seconds), and TCP keepalives plus `tcp_user_timeout`
//! on both ends of the socket (a peer whose host vanished is noticed in
//! seconds, not after the kernel's two hours).

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Timeouts};
use shop_runtime::{ConfigError, Env};
use std::ops::{Deref, DerefMut};
use std::time::Duration;
use tokio_postgres::NoTls;

/// Limits of one database session (set as session options at connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLimits {
    /// `statement_timeout`: longest statement.
    pub statement_timeout: Duration,
    /// `lock_timeout`: longest wait for one lock; `None` waits up to the statement timeout.
    pub lock_timeout: Option<Duration>,
    /// `idle_in_transaction_session_timeout`: a session idle inside a
    /// transaction this long is ended by the server, releasing its locks.
    pub idle_in_transaction_timeout: Duration,
    /// First keepalive probe after this much silence (both ends); probes
    /// then go every second, and 3 unanswered ones end the connection.
    pub keepalive_idle: Duration,
    /// `tcp_user_timeout` (both ends): unacknowledged data this long ends the connection.
    pub tcp_user_timeout: Duration,
}

impl SessionLimits {
    /// The `-c name=value` options a session starts with.
    fn options(&self) -> String {
        let ms = |d: Duration| d.as_millis();
        let mut options = format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={} \
             -c tcp_keepalives_idle={} -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3 \
             -c tcp_user_timeout={}",
            ms(self.statement_timeout),
            ms(self.idle_in_transaction_timeout),
            self.keepalive_idle.as_secs().max(1),
            ms(self.tcp_user_timeout),
        );
        if let Some(lock) = self.lock_timeout {
            options.push_str(&format!(" -c lock_timeout={}", ms(lock)));
        }
        options
    }
}

/// Where and how to reach a service's database.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// A libpq-style URL, e.g. `postgres://postgres@127.0.0.1:5432/payments`.
    pub url: String,
    /// `DATABASE_POOL_SIZE`: connections of the pipeline's pool.
    pub pool_size: usize,
    /// `DATABASE_API_POOL_SIZE`: connections of the API's pool.
    pub api_pool_size: usize,
    /// `DATABASE_CONNECT_TIMEOUT_MS`: how long to wait for a connection (at start and from a pool).
    pub connect_timeout: Duration,
    /// The pipeline's and the relay's sessions.
    pub limits: SessionLimits,
    /// The API's sessions: `DATABASE_API_STATEMENT_TIMEOUT_MS`, `DATABASE_API_LOCK_TIMEOUT_MS`.
    pub api_limits: SessionLimits,
    /// `DATABASE_API_CALLS_PER_KEY`: API calls per account or user that hold
    /// a connection at once (see [`crate::gate`]); others wait without one.
    pub api_calls_per_key: usize,
}

impl DbConfig {
    /// The defaults for `url`.
    pub fn for_url(url: impl Into<String>) -> Self {
        let limits = SessionLimits {
            statement_timeout: Duration::from_secs(30),
            lock_timeout: None,
            idle_in_transaction_timeout: Duration::from_secs(10),
            keepalive_idle: Duration::from_secs(5),
            tcp_user_timeout: Duration::from_secs(10),
        };
        Self {
            url: url.into(),
            pool_size: 16,
            api_pool_size: 16,
            api_calls_per_key: 4,
            connect_timeout: Duration::from_secs(5),
            api_limits: SessionLimits {
                statement_timeout: Duration::from_secs(5),
                lock_timeout: Some(Duration::from_secs(1)),
                ..limits.clone()
            },
            limits,
        }
    }

    /// Reads `{prefix}DATABASE_URL`, `…DATABASE_POOL_SIZE`, `…DATABASE_API_POOL_SIZE`,
    /// `…DATABASE_CONNECT_TIMEOUT_MS`, `…DATABASE_STATEMENT_TIMEOUT_MS`,
    /// `…DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS`, `…DATABASE_KEEPALIVE_IDLE_MS`,
    /// `…DATABASE_TCP_USER_TIMEOUT_MS`, `…DATABASE_API_STATEMENT_TIMEOUT_MS`
    /// and `…DATABASE_API_LOCK_TIMEOUT_MS`.
    pub fn from_env(env: &Env, default_database: &str) -> Result<Self, ConfigError> {
        let d = Self::for_url(env.string_or(
            "DATABASE_URL",
            &format!("postgres://postgres@127.0.0.1:5432/{default_database}"),
        ));
        let size = |name: &str, default: usize| -> Result<usize, ConfigError> {
            let size: usize = env.parse_or(name, default)?;
            if size == 0 {
                return Err(env.invalid(name, "0", "must be greater than 0"));
            }
            Ok(size)
        };
        let limits = SessionLimits {
            statement_timeout: env
                .millis_or("DATABASE_STATEMENT_TIMEOUT_MS", d.limits.statement_timeout)?,
            lock_timeout: None,
            idle_in_transaction_timeout: env.millis_or(
                "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS",
                d.limits.idle_in_transaction_timeout,
            )?,
            keepalive_idle: env.millis_or("DATABASE_KEEPALIVE_IDLE_MS", d.limits.keepalive_idle)?,
            tcp_user_timeout: env
                .millis_or("DATABASE_TCP_USER_TIMEOUT_MS", d.limits.tcp_user_timeout)?,
        };
        let api_limits = SessionLimits {
            statement_timeout: env.millis_or(
                "DATABASE_API_STATEMENT_TIMEOUT_MS",
                d.api_limits.statement_timeout,
            )?,
            lock_timeout: Some(env.millis_or(
                "DATABASE_API_LOCK_TIMEOUT_MS",
                d.api_limits.lock_timeout.unwrap_or(Duration::from_secs(1)),
            )?),
            ..limits.clone()
        };
        Ok(Self {
            pool_size: size("DATABASE_POOL_SIZE", d.pool_size)?,
            api_pool_size: size("DATABASE_API_POOL_SIZE", d.api_pool_size)?,
            api_calls_per_key: size("DATABASE_API_CALLS_PER_KEY", d.api_calls_per_key)?,
            connect_timeout: env.millis_or("DATABASE_CONNECT_TIMEOUT_MS", d.connect_timeout)?,
            limits,
            api_limits,
            url: d.url,
        })
    }
}

/// Why the pool could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] tokio_postgres::Error),
    #[error("cannot build the connection pool: {0}")]
    Build(String),
    #[error("cannot connect to the database {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: deadpool_postgres::PoolError,
    },
}

/// The pipeline's pool (inbox, retention, gauges); proves one connection works.
pub async fn connect(config: &DbConfig) -> Result<Pool, PoolError> {
    build(config, config.pool_size, &config.limits, "").await
}

/// The API's pool: its own connections, so blocked API calls cannot starve
/// the pipeline (nor the other way round), and sessions with a short
/// `lock_timeout`, so a call waiting on a locked row fails in time to answer
/// UNAVAILABLE within its deadline. Take its connections with
/// [`CallClient::get`].
pub async fn connect_for_api(config: &DbConfig) -> Result<Pool, PoolError> {
    build(config, config.api_pool_size, &config.api_limits, "").await
}

/// A small pool for the relay's bookkeeping (cursor moves, leases, retries),
/// whose commits do not wait for the WAL flush (`synchronous_commit=off`).
/// That is safe only because every such write is idempotent: a cursor move
/// lost in a database crash means the events are published again, and
/// consumers deduplicate them. Business writes never use this pool.
pub async fn connect_for_relay(config: &DbConfig) -> Result<Pool, PoolError> {
    // JIT never pays off for the relay's small statements (an estimate
    // gone wrong once cost it tens of milliseconds a pass).
    build(
        config,
        2,
        &config.limits,
        " -c synchronous_commit=off -c jit=off",
    )
    .await
}

async fn build(
    config: &DbConfig,
    size: usize,
    limits: &SessionLimits,
    extra: &str,
) -> Result<Pool, PoolError> {
    let mut pg: tokio_postgres::Config = config.url.parse().map_err(PoolError::InvalidUrl)?;
    let target = describe(&pg);
    pg.connect_timeout(config.connect_timeout)
        .keepalives(true)
        .keepalives_idle(limits.keepalive_idle)
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(3)
        .tcp_user_timeout(limits.tcp_user_timeout);
    // Keep whatever options the URL already sets (e.g. a search_path).
    let options = format!("{}{extra}", limits.options());
    let combined = match pg.get_options() {
        Some(existing) if !existing.is_empty() => format!("{existing} {options}"),
        _ => options,
    };
    pg.options(&combined);
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(config.connect_timeout),
            create: Some(config.connect_timeout),
            recycle: Some(config.connect_timeout),
        })
        .build()
        .map_err(|e| PoolError::Build(e.to_string()))?;
    let _probe = pool
        .get()
        .await
        .map_err(|source| PoolError::Connect { target, source })?;
    Ok(pool)
}

/// A connection for one unit of work — an API call (taken by the gRPC edge)
/// or an inbox batch — handed back with [`CallClient::release`] once the
/// work returned.
///
/// If the work is dropped before that — an API call's deadline passed and
/// tonic dropped the handler's future, or an inbox worker abandoned its batch
/// on revoke — the statement in flight is cancelled (the server's cancel
/// request) and the connection is discarded, never returned to the pool with
/// a statement still queued on it for the next caller to wait behind.
#[derive(Debug)]
pub struct CallClient(Option<Object>);

impl CallClient {
    /// A connection from `pool` (waits at most the pool's wait timeout).
    pub async fn get(pool: &Pool) -> Result<Self, deadpool_postgres::PoolError> {
        Ok(Self(Some(pool.get().await?)))
    }

    /// The call finished: the connection goes back to the pool.
    pub fn release(mut self) {
        drop(self.0.take());
    }

    fn object(&self) -> &Object {
        self.0
            .as_ref()
            .expect("a CallClient holds its connection until dropped")
    }
}

impl Deref for CallClient {
    type Target = Object;

    fn deref(&self) -> &Object {
        self.object()
    }
}

impl DerefMut for CallClient {
    fn deref_mut(&mut self) -> &mut Object {
        self.0
            .as_mut()
            .expect("a CallClient holds its connection until dropped")
    }
}

impl Drop for CallClient {
    fn drop(&mut self) {
        let Some(object) = self.0.take() else {
            return; // released
        };
        metrics::counter!("shop_db_calls_abandoned_total").increment(1);
        let cancel = object.cancel_token();
        // Out of the pool for good: closed once the cancel has been sent.
        let connection = Object::take(object);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = cancel.cancel_query(NoTls).await {
                        tracing::warn!(error = %e, "cannot cancel an abandoned statement");
                    }
                    drop(connection);
                });
            }
            Err(_) => drop(connection),
        }
    }
}
/// `user@host:port/dbname`, without the password, for messages.
fn describe(pg: &tokio_postgres::Config) -> String {
    let host = pg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        pg.get_user().unwrap_or("?"),
        pg.get_dbname().unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_loopback() {
        let env = Env::from_pairs("PAYMENTS_", Vec::<(String, String)>::new());
        let db = DbConfig::from_env(&env, "payments").expect("defaults are valid");
        assert_eq!(db.url, "postgres://postgres@127.0.0.1:5432/payments");
        assert_eq!(db.pool_size, 16);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("PAYMENTS_DATABASE_POOL_SIZE", "many"),
            ("PAYMENTS_DATABASE_POOL_SIZE", "0"),
            ("PAYMENTS_DATABASE_CONNECT_TIMEOUT_MS", "0"),
        ] {
            let env = Env::from_pairs("PAYMENTS_", [(var, value)]);
            let err = DbConfig::from_env(&env, "payments").expect_err(var);
            assert_eq!(err.var, var, "{err}");
        }
    }

    #[test]
    fn new_variables_are_read_and_checked() {
        let env = Env::from_pairs(
            "PAYMENTS_",
            [
                ("PAYMENTS_DATABASE_API_POOL_SIZE", "8"),
                ("PAYMENTS_DATABASE_API_LOCK_TIMEOUT_MS", "250"),
                ("PAYMENTS_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", "3000"),
            ],
        );
        let db = DbConfig::from_env(&env, "payments").expect("valid");
        assert_eq!(db.api_pool_size, 8);
        assert_eq!(db.api_limits.lock_timeout, Some(Duration::from_millis(250)));
        assert_eq!(db.limits.lock_timeout, None, "the pipeline waits on locks");
        assert_eq!(
            db.api_limits.idle_in_transaction_timeout,
            Duration::from_secs(3),
            "the API's sessions share the session-wide limits"
        );
        for (var, value) in [
            ("PAYMENTS_DATABASE_API_POOL_SIZE", "0"),
            ("PAYMENTS_DATABASE_API_CALLS_PER_KEY", "0"),
            ("PAYMENTS_DATABASE_API_LOCK_TIMEOUT_MS", "soon"),
            ("PAYMENTS_DATABASE_STATEMENT_TIMEOUT_MS", "0"),
        ] {
            let env = Env::from_pairs("PAYMENTS_", [(var, value)]);
            let err = DbConfig::from_env(&env, "payments").expect_err(var);
            assert_eq!(err.var, var, "{err}");
        }
    }

    #[test]
    fn session_options_carry_every_limit() {
        let db = DbConfig::for_url("postgres://x@h/d");
        let api = db.api_limits.options();
        for part in [
            "statement_timeout=5000",
            "lock_timeout=1000",
            "idle_in_transaction_session_timeout=10000",
            "tcp_keepalives_idle=5",
            "tcp_user_timeout=10000",
        ] {
            assert!(api.contains(part), "{api} lacks {part}");
        }
        assert!(!db.limits.options().contains("lock_timeout"));
    }

    #[test]
    fn description_hides_the_password() {
        let pg: tokio_postgres::Config = "postgres://alice:secret@db.example:6543/shop"
            .parse()
            .expect("valid url");
        let text = describe(&pg);
        assert_eq!(text, "alice@db.example:6543/shop");
    }
}
