//! Dead letters: poison messages parked with their error so their partition
//! keeps moving; listed and replayed on demand through the outbox (the
//! `dead-letters list|replay` command of every service).

use crate::{DbError, Pool, headers};
use rdkafka::Message;

/// Records `message` with the error that made it fail.
pub async fn park(
    pool: &Pool,
    message: &impl Message,
    error: &str,
    attempts: u32,
) -> Result<(), DbError> {
    let client = pool.get().await?;
    let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
    // TEXT columns cannot hold NUL: a poison message may carry one anywhere.
    let event_type = headers::get(message, headers::EVENT_TYPE).map(|t| t.replace('\0', ""));
    let error = error.replace('\0', "");
    client
        .execute(
            "INSERT INTO dead_letters (topic, partition, \"offset\", key, payload, event_type, error, attempts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (topic, partition, \"offset\") DO NOTHING",
            &[
                &message.topic(),
                &message.partition(),
                &message.offset(),
                &message.key(),
                &message.payload(),
                &event_type,
                &error,
                &attempts,
            ],
        )
        .await?;
    metrics::counter!("shop_dead_letters_total", "topic" => message.topic().to_owned())
        .increment(1);
    tracing::error!(
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        %error,
        "message dead-lettered"
    );
    Ok(())
}

/// A parked message as an operator lists it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub event_type: Option<String>,
    pub error: String,
    pub attempts: i32,
    pub created_at: std::time::SystemTime,
}

/// The dead letters waiting for a replay (of `topic` only, if given), oldest first.
pub async fn list(pool: &Pool, topic: Option<&str>) -> Result<Vec<DeadLetter>, DbError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, topic, partition, \"offset\", event_type, error, attempts, created_at
             FROM dead_letters
             WHERE replayed_at IS NULL AND ($1::text IS NULL OR topic = $1)
             ORDER BY id",
            &[&topic],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(DeadLetter {
                id: r.try_get(0)?,
                topic: r.try_get(1)?,
                partition: r.try_get(2)?,
                offset: r.try_get(3)?,
                event_type: r.try_get(4)?,
                error: r.try_get(5)?,
                attempts: r.try_get(6)?,
                created_at: r.try_get(7)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(DbError::from)
}

/// What a replay moved (or, in a dry run, would move).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Dead letters copied into the outbox, for their original topic.
    pub dead_letters: u64,
    /// Outbox rows the relay had parked, released for another try.
    pub parked_events: u64,
}

/// Re-publishes every un-replayed dead letter (of `topic` only, if given) by
/// copying it into the outbox, and releases the outbox rows the relay had
/// parked; then NOTIFYs running relays so they publish at once. A dry run
/// counts and changes nothing. Safe to repeat: consumers deduplicate, and a
/// payment is decided once per order whatever arrives again.
pub async fn replay(pool: &Pool, topic: Option<&str>, dry_run: bool) -> Result<Replayed, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // A replayed row carries no trace context: the relay starts a trace.
    let copy = format!(
        "WITH replayed AS (
             UPDATE dead_letters SET replayed_at = now()
             WHERE replayed_at IS NULL AND ($1::text IS NULL OR topic = $1)
             RETURNING topic, key, payload, event_type
         )
         INSERT INTO outbox ({})
         SELECT gen_random_uuid(), topic, coalesce(key, ''::bytea),
                coalesce(event_type, 'unknown'), coalesce(payload, ''::bytea),
                NULL, clock_timestamp()
         FROM replayed",
        crate::outbox::COLUMNS
    );
    let dead_letters = tx.execute(&copy, &[&topic]).await?;
    let parked_events = tx
        .execute(
            "UPDATE outbox SET parked_at = NULL, retry_at = now(), attempts = 0
             WHERE parked_at IS NOT NULL AND ($1::text IS NULL OR topic = $1)",
            &[&topic],
        )
        .await?;
    let replayed = Replayed {
        dead_letters,
        parked_events,
    };
    if dry_run {
        tx.rollback().await?;
        return Ok(replayed);
    }
    tx.execute("SELECT pg_notify($1, '')", &[&crate::outbox::CHANNEL])
        .await?;
    tx.commit().await?;
    tracing::info!(
        dead_letters,
        parked_events,
        "dead letters and parked events replayed through the outbox"
    );
    Ok(replayed)
}
