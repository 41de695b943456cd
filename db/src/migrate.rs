//! Runs a service's migrations under a Postgres advisory lock, so replicas
//! starting together do not race. Every service gets the shared messaging
//! schema (outbox, inbox, dead letters) as its versions 2, 4, 6, 8 and 10; a
//! service's own migrations use the odd numbers.

use deadpool_postgres::Pool;
use refinery::{Migration, Runner};

/// Arbitrary constant shared by every service: one migrator per database at a time.
const MIGRATION_LOCK: i64 = 0x5348_4f50_4d49_4752; // "SHOPMIGR"
/// The versions, names and SQL of the shared messaging schema, in every service.
pub const MESSAGING: [(u32, &str, &str); 5] = [
    (2, "messaging", include_str!("../sql/messaging.sql")),
    (
        4,
        "messaging_relay",
        include_str!("../sql/messaging_relay.sql"),
    ),
    (
        6,
        "messaging_retention",
        include_str!("../sql/messaging_retention.sql"),
    ),
    (
        8,
        "messaging_observe",
        include_str!("../sql/messaging_observe.sql"),
    ),
    (
        10,
        "messaging_cursor",
        include_str!("../sql/messaging_cursor.sql"),
    ),
];

/// Why migrations did not complete.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("no database connection for migrations: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("migration lock failed: {0}")]
    Lock(#[from] tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Refinery(#[from] refinery::Error),
    #[error("service migration V{0} is reserved for the messaging schema")]
    ReservedVersion(u32),
}

/// A service's own migrations plus the shared messaging schema.
pub fn with_messaging(service: &Runner) -> Result<Vec<Migration>, MigrateError> {
    let mut all = service.get_migrations().clone();
    for (version, name, sql) in MESSAGING {
        if all
            .iter()
            .any(|m| i64::from(m.version()) == i64::from(version))
        {
            return Err(MigrateError::ReservedVersion(version));
        }
        all.push(Migration::unapplied(&format!("V{version}__{name}"), sql)?);
    }
    all.sort_by_key(Migration::version);
    Ok(all)
}

/// Applies every pending migration; returns the names applied now.
pub async fn run(pool: &Pool, migrations: &[Migration]) -> Result<Vec<String>, MigrateError> {
    let runner = Runner::new(migrations);
    let mut client = pool.get().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = runner.run_async(&mut **client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    let applied = report?
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>();
    for name in &applied {
        tracing::info!(migration = %name, "applied migration");
    }
    Ok(applied)
}
