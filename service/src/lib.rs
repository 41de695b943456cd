//! What every backend service runs, written once, on the machinery of
//! `shop-db`: its configuration
//! ([`ServiceConfig`]: listen address, database, Kafka, relay, inbox, logs),
//! the named parts a service's `startup` builds ([`Service`]: pool, gRPC
//! router, notifications, outbox relay, inbox consumer), the one run function
//! that drives them until shutdown ([`Service::run_until_stopped`]) and the
//! command line (`serve | migrate | dead-letters list|replay | health [ADDR]`).

use anyhow::Context;
use refinery::Migration;
use shop_db::inbox::{Handler, InboxConfig, InboxConsumer};
use shop_db::kafka::KafkaConfig;
use shop_db::listen::Listener;
use shop_db::pool::DbConfig;
use shop_db::relay::{Relay, RelayConfig};
use shop_db::retention::{Retention, RetentionConfig};
use shop_db::{Pool, dead_letter, migrate, pool};
use shop_runtime::cli::{self, Command};
use shop_runtime::grpc::{self, GrpcRouter, Health};
use shop_runtime::{ConfigError, Env, LogFormat, shutdown, telemetry};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
    /// Bucket bounds (seconds) of the service's own histograms, by metric
    /// name; the messaging histograms' are added by the runner.
    pub histograms: &'static [(&'static str, &'static [f64])],
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
    /// `RETENTION_*`: how long old rows are kept.
    pub retention: RetentionConfig,
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
            retention: RetentionConfig::from_env(env)?,
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

impl ServiceConfig {
    /// Connects to the service's database and applies every pending
    /// migration (under an advisory lock, so replicas may start together).
    pub async fn open_database(&self, migrations: &[Migration]) -> anyhow::Result<Pool> {
        let pool = pool::connect(&self.database).await?;
        migrate::run(&pool, migrations).await?;
        Ok(pool)
    }

    /// Creates both topics with the configured layout (existing ones stay).
    pub async fn create_topics(&self) -> anyhow::Result<()> {
        let topics = &self.kafka.topics;
        self.kafka
            .ensure_topics(&[&topics.requests, &topics.results])
            .await
            .with_context(|| format!("cannot create topics on {}", self.kafka.brokers))
    }

    /// Binds the gRPC listener (port 0 picks a free one).
    pub async fn bind(&self) -> anyhow::Result<TcpListener> {
        TcpListener::bind(self.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", self.listen_addr))
    }
}

/// A service with every part built, ready to run. Each service's
/// `startup::build` fills it in, in plain sight.
#[derive(Debug)]
pub struct Service<H> {
    /// The service's database.
    pub pool: Pool,
    /// Where gRPC is served (already bound, so port 0 works).
    pub listener: TcpListener,
    /// The gRPC router: the service's API, health and reflection.
    pub grpc: GrpcRouter,
    /// The health the router reports: NOT_SERVING if the pipeline dies.
    pub health: Health,
    /// Postgres NOTIFY fan-out (the relay's outside wake-ups, and any channel
    /// the service's own code listens to).
    pub notifications: Listener,
    /// Publishes the service's outbox.
    pub relay: Relay,
    /// Applies the consumed topic through the inbox and the service's handler.
    pub consumer: InboxConsumer<H>,
    /// Deletes old outbox, inbox and dead-letter rows and expired keys.
    pub retention: Retention,
    /// The service's own background work (the orders expiry sweep), run
    /// and stopped like the parts above.
    pub jobs: Vec<Job>,
}

/// A service's own background task: `run` works until its token is
/// cancelled; an error, or stopping on its own, stops the service.
pub struct Job {
    pub name: &'static str,
    pub run: Box<dyn FnOnce(CancellationToken) -> JobFuture + Send>,
}

/// The work of a [`Job`].
pub type JobFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("name", &self.name).finish()
    }
}

impl<H: Handler> Service<H> {
    /// The bound gRPC address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves gRPC, consumes through the inbox, relays the outbox and sweeps
    /// old rows until `shutdown`; then lets each finish its unit of work,
    /// flushes the producer, commits offsets and closes the pool. If any of
    /// them stops on its own (an error, a panic), health turns NOT_SERVING,
    /// the others are stopped and the error is returned, so the process
    /// exits non-zero and its supervisor restarts it.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            pool,
            listener,
            grpc,
            health,
            notifications,
            relay,
            consumer,
            retention,
            jobs,
        } = self;
        tracing::info!(addr = %listener.local_addr()?, "gRPC listening");
        let stop = shutdown.child_token();
        let mut tasks = JoinSet::new();
        let token = stop.clone();
        tasks.spawn(async move {
            let served = grpc::serve(grpc, listener, token).await;
            ("gRPC server", served.map_err(anyhow::Error::from))
        });
        let token = stop.clone();
        tasks.spawn(async move {
            let consumed = consumer.run(token).await;
            ("inbox consumer", consumed.map_err(anyhow::Error::from))
        });
        let token = stop.clone();
        tasks.spawn(async move {
            let relayed = relay.run(&notifications, token).await;
            ("outbox relay", relayed.map_err(anyhow::Error::from))
        });
        let token = stop.clone();
        tasks.spawn(async move {
            retention.run(token).await;
            ("retention sweep", Ok(()))
        });
        let (token, observed) = (stop.clone(), pool.clone());
        tasks.spawn(async move {
            shop_db::observe::run(observed, token).await;
            ("gauges", Ok(()))
        });
        for job in jobs {
            let work = (job.run)(stop.clone());
            tasks.spawn(async move { (job.name, work.await) });
        }

        let failure = match tasks.join_next().await {
            Some(Ok((_, Ok(())))) if shutdown.is_cancelled() => None,
            Some(Ok((part, Ok(())))) => Some(anyhow::anyhow!("the {part} stopped on its own")),
            Some(Ok((part, Err(e)))) => Some(e.context(format!("the {part} failed"))),
            Some(Err(e)) => Some(anyhow::anyhow!("a service task panicked: {e}")),
            None => None,
        };
        if let Some(e) = &failure {
            tracing::error!(
                error = format!("{e:#}"),
                "stopping: the service cannot work without it"
            );
            health.not_serving().await;
        }
        stop.cancel();
        while let Some(ended) = tasks.join_next().await {
            match ended {
                Ok((part, Err(e))) => {
                    tracing::warn!(error = format!("{e:#}"), part, "failed while stopping")
                }
                Err(e) => tracing::warn!(error = %e, "a service task panicked while stopping"),
                Ok(_) => {}
            }
        }
        pool.close();
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}

/// The command line shared by every service binary:
/// `serve` (default) | `migrate` | `dead-letters list|replay [--topic T]
/// [--dry-run]` | `health [ADDR]`.
/// `serve` hands the configuration and the shutdown token to `serve`.
pub async fn main<F, Fut>(spec: &ServiceSpec, serve: F) -> ExitCode
where
    F: FnOnce(ServiceConfig, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    cli::exit(spec.name, command(spec, serve).await)
}

async fn command<F, Fut>(spec: &ServiceSpec, serve: F) -> anyhow::Result<()>
where
    F: FnOnce(ServiceConfig, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config = ServiceConfig::from_env(spec, &Env::from_process(spec.prefix))?;
    let telemetry = telemetry::init(config.log_format, spec.name);
    let command = Command::from_process();
    let outcome = run(spec, serve, config, &command).await;
    // The last spans are exported before the process exits.
    telemetry.shutdown().await;
    outcome
}

async fn run<F, Fut>(
    spec: &ServiceSpec,
    serve: F,
    config: ServiceConfig,
    command: &Command,
) -> anyhow::Result<()>
where
    F: FnOnce(ServiceConfig, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    match command.name.as_str() {
        "serve" => {
            if let Some(addr) = config.metrics_addr {
                let mut exporter =
                    metrics_exporter_prometheus::PrometheusBuilder::new().with_http_listener(addr);
                for (name, buckets) in spec.histograms.iter().chain(shop_db::relay::HISTOGRAMS) {
                    exporter = exporter.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full((*name).to_owned()),
                        buckets,
                    )?;
                }
                exporter
                    .install()
                    .with_context(|| format!("cannot serve metrics on {addr}"))?;
                tracing::info!(%addr, "Prometheus metrics at /metrics");
            }
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone());
            serve(config, token).await
        }
        "migrate" => {
            let pool = pool::connect(&config.database).await?;
            let applied = migrate::run(&pool, &(spec.migrations)()?).await?;
            pool.close();
            println!("applied {} migration(s)", applied.len());
            Ok(())
        }
        "dead-letters" | "replay-dead-letters" => dead_letters(&config, command).await,
        "health" => {
            let addr = match command.args.first() {
                Some(a) => a.parse().with_context(|| format!("bad address {a:?}"))?,
                None => config.listen_addr,
            };
            grpc::check_health(addr, spec.grpc_service, Duration::from_secs(2)).await?;
            println!("SERVING");
            Ok(())
        }
        _ => Err(command.unknown(
            "`serve`, `migrate`, `dead-letters list|replay [--topic T] [--dry-run]` or `health [ADDR]`",
        )),
    }
}

/// `dead-letters list [--topic T]` and `dead-letters replay [--topic T]
/// [--dry-run]` (`replay-dead-letters` is `dead-letters replay`).
async fn dead_letters(config: &ServiceConfig, command: &Command) -> anyhow::Result<()> {
    let mut args = command.args.iter().map(String::as_str);
    let action = if command.name == "replay-dead-letters" {
        "replay"
    } else {
        args.next().unwrap_or("list")
    };
    let (mut topic, mut dry_run) = (None, false);
    while let Some(arg) = args.next() {
        match arg {
            "--topic" => topic = Some(args.next().context("--topic needs a topic name")?),
            "--dry-run" => dry_run = true,
            other => anyhow::bail!("unknown option {other:?}; use --topic T or --dry-run"),
        }
    }
    let pool = pool::connect(&config.database).await?;
    let outcome = match action {
        "list" => {
            let letters = dead_letter::list(&pool, topic).await?;
            for l in &letters {
                println!(
                    "{}\t{}[{}]@{}\t{}\tattempts {}\t{}",
                    l.id,
                    l.topic,
                    l.partition,
                    l.offset,
                    l.event_type.as_deref().unwrap_or("-"),
                    l.attempts,
                    l.error
                );
            }
            println!("{} dead letter(s) waiting for a replay", letters.len());
            Ok(())
        }
        "replay" => {
            let replayed = dead_letter::replay(&pool, topic, dry_run).await?;
            let verb = if dry_run { "would replay" } else { "replayed" };
            println!(
                "{verb} {} dead letter(s) and {} parked event(s)",
                replayed.dead_letters, replayed.parked_events
            );
            Ok(())
        }
        other => Err(anyhow::anyhow!(
            "unknown action {other:?}; use `list` or `replay`"
        )),
    };
    pool.close();
    outcome
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
        histograms: &[],
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
            ("DEMO_RETENTION_IDEMPOTENCY_HOURS", "23"),
            ("DEMO_RETENTION_BATCH_SIZE", "0"),
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
