//! The Postgres connection pool, built from typed config and checked at start
//! so that an unreachable database is a clear error, not a panic later.

use crate::DbConfig;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::NoTls;

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
    let pg: tokio_postgres::Config = config.url.parse().map_err(PoolError::InvalidUrl)?;
    let target = describe(&pg);
    let mut pg = pg;
    pg.connect_timeout(config.connect_timeout);
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(config.pool_size)
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
    fn description_hides_the_password() {
        let pg: tokio_postgres::Config = "postgres://alice:secret@db.example:6543/shop"
            .parse()
            .expect("valid url");
        let text = describe(&pg);
        assert_eq!(text, "alice@db.example:6543/shop");
    }
}
