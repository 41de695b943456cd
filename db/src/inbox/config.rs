//! How the consumer gets partitions, batches and retries: the
//! `CONSUMER_*` and `INBOX_*` variables.

use shop_runtime::{ConfigError, Env};
use std::time::Duration;

/// How a consumer gets its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// Kafka group management: replicas share the partitions (the default).
    Group,
    /// This instance reads every partition itself, committing offsets under
    /// the group id, and picks up partitions added later. For a single
    /// instance, and the workaround for brokers that never expire a killed
    /// member (tansu, see docs/architecture.md). Still exactly once with
    /// several instances (the inbox deduplicates), only wasteful.
    All,
}

impl std::fmt::Display for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Group => "group",
            Self::All => "all",
        })
    }
}

impl std::str::FromStr for Assignment {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "group" => Ok(Self::Group),
            "all" => Ok(Self::All),
            other => Err(format!("expected `group` or `all`, got `{other}`")),
        }
    }
}

/// How the consumer gets partitions, batches and retries.
#[derive(Debug, Clone)]
pub struct InboxConfig {
    /// `{PREFIX}CONSUMER_GROUP`.
    pub group_id: String,
    /// `{PREFIX}CONSUMER_ASSIGNMENT`: `group` (default) or `all`.
    pub assignment: Assignment,
    /// `{PREFIX}INBOX_BATCH_SIZE`: most messages of one partition applied in one transaction.
    pub batch_size: usize,
    /// `{PREFIX}INBOX_MAX_ATTEMPTS`: attempts before an invalid message is dead-lettered.
    pub max_attempts: u32,
    /// First and largest delay between attempts.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// `{PREFIX}INBOX_PARTITION_REFRESH_MS`: in `all` mode, how often to look
    /// for partitions added to the topic.
    pub partition_refresh: Duration,
    /// `{PREFIX}INBOX_REVOKE_TIMEOUT_MS`: how long a revoke (or shutdown)
    /// waits for a partition's worker to finish its batch; half of it is the
    /// grace after which a batch in flight is abandoned (its statement
    /// cancelled, its transaction rolled back).
    pub revoke_timeout: Duration,
    /// `{PREFIX}INBOX_GAP_REWIND`: 0 (the default) for Apache Kafka; for
    /// tansu 0.6.0, whose fetch skips the rest of a batch it starts inside
    /// (test-broker defect 1), at least the producers' `batch.num.messages`:
    /// a partition whose offsets skip ahead is fetched again from this many
    /// offsets earlier (see `continuity.rs`).
    pub gap_rewind: u32,
}

impl InboxConfig {
    /// Reads `CONSUMER_GROUP`, `CONSUMER_ASSIGNMENT` and the `INBOX_*` variables.
    pub fn from_env(env: &Env, default_group: &str) -> Result<Self, ConfigError> {
        let max_attempts: u32 = env.parse_or("INBOX_MAX_ATTEMPTS", 5)?;
        if max_attempts == 0 {
            return Err(env.invalid("INBOX_MAX_ATTEMPTS", "0", "must be at least 1"));
        }
        let batch_size: usize = env.parse_or("INBOX_BATCH_SIZE", 500)?;
        if !(1..=10_000).contains(&batch_size) {
            return Err(env.invalid(
                "INBOX_BATCH_SIZE",
                &batch_size.to_string(),
                "must be 1..=10000",
            ));
        }
        Ok(Self {
            group_id: env.string_or("CONSUMER_GROUP", default_group),
            assignment: env.parse_or("CONSUMER_ASSIGNMENT", Assignment::Group)?,
            batch_size,
            max_attempts,
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            partition_refresh: env
                .millis_or("INBOX_PARTITION_REFRESH_MS", Duration::from_secs(10))?,
            revoke_timeout: env.millis_or("INBOX_REVOKE_TIMEOUT_MS", Duration::from_secs(5))?,
            gap_rewind: env.parse_or("INBOX_GAP_REWIND", 0)?,
        })
    }
}
