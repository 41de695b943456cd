//! Typed configuration from `PAYMENTS_*` environment variables.

use shop_db::inbox::InboxConfig;
use shop_db::kafka::KafkaConfig;
use shop_db::outbox::RelayConfig;
use shop_db::{ConfigError, DbConfig, Env, LogFormat};
use std::net::SocketAddr;

/// The variable prefix.
pub const PREFIX: &str = "PAYMENTS_";
/// Default gRPC listen address.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:50052";
/// Default consumer group of the request consumer.
pub const DEFAULT_CONSUMER_GROUP: &str = "payments";

/// Everything the payments service reads at start.
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    /// `PAYMENTS_LISTEN_ADDR`: where gRPC is served.
    pub listen_addr: SocketAddr,
    /// `PAYMENTS_DATABASE_*`: the payments database.
    pub database: DbConfig,
    /// `PAYMENTS_KAFKA_*`, `PAYMENTS_TOPIC_*`: brokers, client properties, topics.
    pub kafka: KafkaConfig,
    /// `PAYMENTS_RELAY_*`: the outbox relay.
    pub relay: RelayConfig,
    /// `PAYMENTS_CONSUMER_GROUP`, `PAYMENTS_INBOX_*`: the request consumer.
    pub inbox: InboxConfig,
    /// `PAYMENTS_LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
}

impl PaymentsConfig {
    /// Reads and checks every variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let default_addr: SocketAddr = DEFAULT_LISTEN_ADDR
            .parse()
            .map_err(|_| env.invalid("LISTEN_ADDR", DEFAULT_LISTEN_ADDR, "bad default"))?;
        Ok(Self {
            listen_addr: env.parse_or("LISTEN_ADDR", default_addr)?,
            database: DbConfig::from_env(env, "payments")?,
            kafka: KafkaConfig::from_env(env)?,
            relay: RelayConfig::from_env(env)?,
            inbox: InboxConfig::from_env(env, DEFAULT_CONSUMER_GROUP)?,
            log_format: env.parse_or("LOG_FORMAT", LogFormat::Text)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback() {
        let cfg = PaymentsConfig::from_env(&Env::from_pairs(PREFIX, Vec::<(&str, &str)>::new()))
            .expect("defaults");
        assert_eq!(cfg.listen_addr.to_string(), DEFAULT_LISTEN_ADDR);
        assert_eq!(cfg.log_format, LogFormat::Text);
        assert_eq!(cfg.inbox.group_id, DEFAULT_CONSUMER_GROUP);
        assert_eq!(cfg.kafka.brokers, "127.0.0.1:9092");
    }

    #[test]
    fn bad_listen_addr_names_the_variable() {
        let env = Env::from_pairs(PREFIX, [("PAYMENTS_LISTEN_ADDR", "here")]);
        let err = PaymentsConfig::from_env(&env).expect_err("must fail");
        assert_eq!(err.var, "PAYMENTS_LISTEN_ADDR");
    }
}
