//! Dead letters: poison messages parked with their error so their partition
//! keeps moving, and replayed on demand through the outbox.

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

/// How many dead letters wait for a replay.
pub async fn pending(pool: &Pool) -> Result<i64, DbError> {
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Re-publishes every un-replayed dead letter to its original topic by
/// copying it into the outbox, then NOTIFYs running relays so they send it
/// at once; returns how many.
pub async fn replay_all(pool: &Pool) -> Result<u64, DbError> {
    let client = pool.get().await?;
    let replayed = client
        .execute(
            "WITH replayed AS (
                 UPDATE dead_letters SET replayed_at = now()
                 WHERE replayed_at IS NULL
                 RETURNING topic, key, payload, event_type
             )
             INSERT INTO outbox (event_id, topic, key, event_type, payload)
             SELECT gen_random_uuid(), topic, coalesce(key, ''::bytea),
                    coalesce(event_type, 'unknown'), coalesce(payload, ''::bytea)
             FROM replayed",
            &[],
        )
        .await?;
    client
        .execute("SELECT pg_notify($1, '')", &[&crate::outbox::CHANNEL])
        .await?;
    tracing::info!(replayed, "dead letters replayed through the outbox");
    Ok(replayed)
}
