//! The shape every backend service shares, written once: its configuration
//! (listen address, database, Kafka, relay, inbox, logs), its start-up
//! (pool, migrations, topics, listener), its run (gRPC + inbox consumer +
//! outbox relay until shutdown) and its command line
//! (`serve | migrate | replay-dead-letters | health [ADDR]`).

use crate::inbox::{Handler, InboxConfig, InboxConsumer};
use crate::kafka::KafkaConfig;
use crate::listen::Listener;
use crate::outbox::{Relay, RelayConfig};
use crate::{
    ConfigError, DbConfig, Env, LogFormat, Pool, dead_letter, grpc, migrate, pool, shutdown,
    telemetry,
};
use anyhow::Context;
use refinery::Migration;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;

/// What differs between services.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSpec {
    /// Binary name, e.g. `payments`.
    pub name: &'static str,
    /// Environment prefix, e.g. `PAYMENTS_`.
    pub prefix: &'static str,
    /// Full gRPC service name, for health checks.
    pub grpc_service: &'static str,
    /// Default `LISTEN_ADDR`.
    pub listen_addr: &'static str,
    /// Default database name in `DATABASE_URL`.
    pub database: &'static str,
    /// Default `CONSUMER_GROUP`.
    pub consumer_group: &'static str,
    /// Default `METRICS_ADDR` (Prometheus `/metrics`).
    pub metrics_addr: &'static str,
    /// Every migration of the service's database (messaging schema included).
    pub migrations: fn() -> anyhow::Result<Vec<Migration>>,
}

/// Everything a service reads at start, from `{PREFIX}*` variables.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// `LISTEN_ADDR`: where gRPC is served.
    pub listen_addr: SocketAddr,
    /// `DATABASE_*`: the service's database.
    pub database: DbConfig,
    /// `KAFKA_*`, `TOPIC_*`: brokers, client properties, topics.
    pub kafka: KafkaConfig,
    /// `RELAY_*`: the outbox relay.
    pub relay: RelayConfig,
    /// `CONSUMER_GROUP`, `INBOX_*`: the inbox consumer.
    pub inbox: InboxConfig,
    /// `LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// `METRICS_ADDR`: where Prometheus metrics are served; `off` disables.
    pub metrics_addr: Option<SocketAddr>,
}

impl ServiceConfig {
    /// Reads and checks every variable; a bad one is named in the error.
    pub fn from_env(spec: &ServiceSpec, env: &Env) -> Result<Self, ConfigError> {
        let default_addr: SocketAddr = spec
            .listen_addr
            .parse()
            .map_err(|_| env.invalid("LISTEN_ADDR", spec.listen_addr, "bad default"))?;
        Ok(Self {
            listen_addr: env.parse_or("LISTEN_ADDR", default_addr)?,
            database: DbConfig::from_env(env, spec.database)?,
            kafka: KafkaConfig::from_env(env)?,
            relay: RelayConfig::from_env(env)?,
            inbox: InboxConfig::from_env(env, spec.consumer_group)?,
            log_format: env.parse_or("LOG_FORMAT", LogFormat::Text)?,
            metrics_addr: match env.string_or("METRICS_ADDR", spec.metrics_addr).as_str() {
                "off" => None,
                raw => Some(raw.parse().map_err(|_| {
                    env.invalid("METRICS_ADDR", raw, "expected host:port or `off`")
                })?),
            },
        })
    }
}

/// The started resources of a service that is not yet serving.
#[derive(Debug)]
pub struct Foundation {
    pub pool: Pool,
    pub listener: TcpListener,
}

/// Connects to the database, applies migrations, creates the topics and
/// binds the gRPC listener.
pub async fn prepare(spec: &ServiceSpec, config: &ServiceConfig) -> anyhow::Result<Foundation> {
    let pool = pool::connect(&config.database).await?;
    migrate::run(&pool, &(spec.migrations)()?).await?;
    let topics = &config.kafka.topics;
    config
        .kafka
        .ensure_topics(&[&topics.requests, &topics.results])
        .await
        .with_context(|| format!("cannot create topics on {}", config.kafka.brokers))?;
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    Ok(Foundation { pool, listener })
}

/// The service's moving parts, ready to run.
#[derive(Debug)]
pub struct Parts<H> {
    pub foundation: Foundation,
    pub router: Router,
    pub consume_topic: String,
    pub handler: H,
    pub notifications: Listener,
}

/// Serves gRPC, consumes `consume_topic` through the inbox and relays the
/// outbox until `shutdown`; then lets each finish its unit of work, flushes
/// the producer, commits offsets and closes the pool.
pub async fn run<H: Handler>(
    config: &ServiceConfig,
    parts: Parts<H>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Parts {
        foundation: Foundation { pool, listener },
        router,
        consume_topic,
        handler,
        notifications,
    } = parts;
    let consumer = InboxConsumer::new(
        pool.clone(),
        config.kafka.consumer(&config.inbox.group_id)?,
        &consume_topic,
        handler,
        config.inbox.clone(),
    );
    let relay = Relay::new(pool.clone(), config.kafka.producer()?, config.relay.clone());
    tracing::info!(addr = %listener.local_addr()?, "gRPC listening");
    let (served, consumed, ()) = tokio::join!(
        grpc::serve(router, listener, shutdown.clone()),
        consumer.run(shutdown.clone()),
        relay.run(&notifications, shutdown.clone()),
    );
    pool.close();
    served?;
    consumed?;
    tracing::info!("stopped");
    Ok(())
}

/// A service application: built from config, then run until shutdown.
pub trait Application: Sized + Send + 'static {
    /// Connects, migrates, creates topics and binds the listener.
    fn build(config: &ServiceConfig) -> impl Future<Output = anyhow::Result<Self>> + Send;
    /// The bound gRPC address (useful with port 0).
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
    /// The database pool.
    fn pool(&self) -> &Pool;
    /// Serves until `shutdown`, then finishes the work in flight.
    fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// What makes one service different from another at run time: its spec,
/// the NOTIFY channels it listens to, and how it wires its gRPC router and
/// its inbox handler on top of the shared foundation.
pub trait Wiring: Send + 'static {
    /// Names and defaults.
    const SPEC: ServiceSpec;
    /// Postgres channels to LISTEN on (the outbox channel is always added).
    const CHANNELS: &'static [&'static str];
    /// The inbox handler of the consumed topic.
    type Handler: Handler;

    /// The gRPC router (health and reflection included), the handler and the
    /// topic it consumes.
    fn wire(
        pool: &Pool,
        config: &ServiceConfig,
        notifications: &Listener,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = anyhow::Result<(Router, Self::Handler, String)>> + Send;
}

/// A service application assembled from its [`Wiring`].
#[derive(Debug)]
pub struct ServiceApp<W> {
    foundation: Foundation,
    config: ServiceConfig,
    wiring: std::marker::PhantomData<fn() -> W>,
}

impl<W: Wiring> Application for ServiceApp<W> {
    async fn build(config: &ServiceConfig) -> anyhow::Result<Self> {
        Ok(Self {
            foundation: prepare(&W::SPEC, config).await?,
            config: config.clone(),
            wiring: std::marker::PhantomData,
        })
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.foundation.listener.local_addr()
    }

    fn pool(&self) -> &Pool {
        &self.foundation.pool
    }

    async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            foundation, config, ..
        } = self;
        let channels: Vec<&str> = std::iter::once(crate::outbox::CHANNEL)
            .chain(W::CHANNELS.iter().copied())
            .collect();
        let notifications = Listener::spawn(&config.database.url, &channels, shutdown.clone());
        let (router, handler, consume_topic) =
            W::wire(&foundation.pool, &config, &notifications, &shutdown).await?;
        let parts = Parts {
            foundation,
            router,
            consume_topic,
            handler,
            notifications,
        };
        run(&config, parts, shutdown).await
    }
}

/// The command line shared by every service binary.
pub async fn main<A: Application>(spec: &ServiceSpec) -> ExitCode {
    let serve = |config: ServiceConfig, shutdown| async move {
        A::build(&config).await?.run_until_stopped(shutdown).await
    };
    match command(spec, serve).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: error: {e:#}", spec.name);
            ExitCode::FAILURE
        }
    }
}

async fn command<F, Fut>(spec: &ServiceSpec, serve: F) -> anyhow::Result<()>
where
    F: FnOnce(ServiceConfig, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config = ServiceConfig::from_env(spec, &Env::from_process(spec.prefix))?;
    telemetry::init(config.log_format);
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None | Some("serve") => {
            if let Some(addr) = config.metrics_addr {
                metrics_exporter_prometheus::PrometheusBuilder::new()
                    .with_http_listener(addr)
                    .install()
                    .with_context(|| format!("cannot serve metrics on {addr}"))?;
                tracing::info!(%addr, "Prometheus metrics at /metrics");
            }
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone());
            serve(config, token).await
        }
        Some("migrate") => {
            let pool = pool::connect(&config.database).await?;
            let applied = migrate::run(&pool, &(spec.migrations)()?).await?;
            pool.close();
            println!("applied {} migration(s)", applied.len());
            Ok(())
        }
        Some("replay-dead-letters") => {
            let pool = pool::connect(&config.database).await?;
            let replayed = dead_letter::replay_all(&pool).await?;
            pool.close();
            println!("replayed {replayed} dead letter(s)");
            Ok(())
        }
        Some("health") => {
            let addr = match args.next() {
                Some(a) => a.parse().with_context(|| format!("bad address {a:?}"))?,
                None => config.listen_addr,
            };
            grpc::check_health(addr, spec.grpc_service, Duration::from_secs(2)).await?;
            println!("SERVING");
            Ok(())
        }
        Some(other) => anyhow::bail!(
            "unknown command {other:?}; use `serve`, `migrate`, `replay-dead-letters` or `health [ADDR]`"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: ServiceSpec = ServiceSpec {
        name: "demo",
        prefix: "DEMO_",
        grpc_service: "demo.v1.Demo",
        listen_addr: "127.0.0.1:50099",
        database: "demo",
        consumer_group: "demo-group",
        metrics_addr: "127.0.0.1:9199",
        migrations: || Ok(Vec::new()),
    };

    #[test]
    fn defaults_are_loopback() {
        let cfg =
            ServiceConfig::from_env(&SPEC, &Env::from_pairs("DEMO_", Vec::<(&str, &str)>::new()))
                .expect("defaults are valid");
        assert_eq!(cfg.listen_addr.to_string(), "127.0.0.1:50099");
        assert_eq!(cfg.database.url, "postgres://postgres@127.0.0.1:5432/demo");
        assert_eq!(cfg.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(cfg.inbox.group_id, "demo-group");
        assert_eq!(cfg.log_format, LogFormat::Text);
        assert_eq!(
            cfg.metrics_addr.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9199")
        );
        let off = Env::from_pairs("DEMO_", [("DEMO_METRICS_ADDR", "off")]);
        assert_eq!(
            ServiceConfig::from_env(&SPEC, &off)
                .expect("valid")
                .metrics_addr,
            None
        );
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        for (var, value) in [
            ("DEMO_LISTEN_ADDR", "here"),
            ("DEMO_DATABASE_POOL_SIZE", "0"),
            ("DEMO_LOG_FORMAT", "xml"),
            ("DEMO_TOPIC_PARTITIONS", "0"),
            ("DEMO_RELAY_BATCH_SIZE", "-1"),
            ("DEMO_RELAY_POLL_INTERVAL_MS", "soon"),
            ("DEMO_INBOX_MAX_ATTEMPTS", "0"),
            ("DEMO_CONSUMER_ASSIGNMENT", "some"),
            ("DEMO_METRICS_ADDR", "everywhere"),
            ("DEMO_KAFKA_CONSUMER_PROPERTIES", "novalue"),
        ] {
            let err = ServiceConfig::from_env(&SPEC, &Env::from_pairs("DEMO_", [(var, value)]))
                .expect_err(var);
            assert_eq!(err.var, var, "{err}");
        }
    }
}
