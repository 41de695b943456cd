//! The Postgres connection pool, built from typed config (`DATABASE_*`) and
//! checked at start so that an unreachable database is a clear error, not a
//! panic later.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use shop_runtime::{ConfigError, Env};
use std::time::Duration;
use tokio_postgres::NoTls;

/// Where and how to reach a service's database.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// A libpq-style URL, e.g. `postgres://postgres@127.0.0.1:5432/payments`.
    pub url: String,
    /// Largest number of pooled connections.
    pub pool_size: usize,
    /// How long to wait for a connection (at start and from the pool).
    pub connect_timeout: Duration,
}

impl DbConfig {
    /// Reads `{prefix}DATABASE_URL`, `…DATABASE_POOL_SIZE`, `…DATABASE_CONNECT_TIMEOUT_MS`.
    pub fn from_env(env: &Env, default_database: &str) -> Result<Self, ConfigError> {
        let url = env.string_or(
            "DATABASE_URL",
            &format!("postgres://postgres@127.0.0.1:5432/{default_database}"),
        );
        let pool_size: usize = env.parse_or("DATABASE_POOL_SIZE", 16)?;
        if pool_size == 0 {
            return Err(env.invalid("DATABASE_POOL_SIZE", "0", "must be greater than 0"));
        }
        Ok(Self {
            url,
            pool_size,
            connect_timeout: env
                .millis_or("DATABASE_CONNECT_TIMEOUT_MS", Duration::from_secs(5))?,
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

/// Builds the pool and proves one connection works.
pub async fn connect(config: &DbConfig) -> Result<Pool, PoolError> {
    build(config, config.pool_size, None).await
}

/// A small pool for the relay's bookkeeping (claims and published marks),
/// whose commits do not wait for the WAL flush (`synchronous_commit=off`).
/// That is safe only because every such write is idempotent: a claim or a
/// mark lost in a database crash means the event is published again, and
/// consumers deduplicate it. Business writes never use this pool.
pub async fn connect_for_relay(config: &DbConfig) -> Result<Pool, PoolError> {
    build(config, 2, Some("-c synchronous_commit=off")).await
}

async fn build(config: &DbConfig, size: usize, options: Option<&str>) -> Result<Pool, PoolError> {
    let pg: tokio_postgres::Config = config.url.parse().map_err(PoolError::InvalidUrl)?;
    let target = describe(&pg);
    let mut pg = pg;
    pg.connect_timeout(config.connect_timeout);
    if let Some(options) = options {
        // Keep whatever options the URL already sets (e.g. a search_path).
        let combined = match pg.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {options}"),
            _ => options.to_owned(),
        };
        pg.options(&combined);
    }
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
    fn description_hides_the_password() {
        let pg: tokio_postgres::Config = "postgres://alice:secret@db.example:6543/shop"
            .parse()
            .expect("valid url");
        let text = describe(&pg);
        assert_eq!(text, "alice@db.example:6543/shop");
    }
}
