//! Builds the application (pool, migrations, topics, Kafka clients, listener)
//! and runs gRPC, the request consumer and the outbox relay until the
//! shutdown token is cancelled.

use crate::PaymentsConfig;
use crate::grpc::{PaymentsGrpc, PaymentsServer};
use crate::ledger::PaymentRequestHandler;
use anyhow::Context;
use shop_db::inbox::InboxConsumer;
use shop_db::listen::Listener;
use shop_db::outbox::{self, Relay};
use shop_db::{Pool, grpc, migrate, pool};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Every migration of the payments database, messaging schema included.
pub fn migrations() -> anyhow::Result<Vec<refinery::Migration>> {
    Ok(migrate::with_messaging(
        &crate::migrations::migrations::runner(),
    )?)
}

/// A built, not yet running, payments service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    pool: Pool,
    config: PaymentsConfig,
}

impl Application {
    /// Connects to the database, applies migrations, creates the topics and
    /// binds the listener.
    pub async fn build(config: &PaymentsConfig) -> anyhow::Result<Self> {
        let pool = pool::connect(&config.database).await?;
        migrate::run(&pool, &migrations()?).await?;
        let topics = &config.kafka.topics;
        config
            .kafka
            .ensure_topics(&[&topics.requests, &topics.results])
            .await
            .with_context(|| format!("cannot create topics on {}", config.kafka.brokers))?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
        Ok(Self {
            listener,
            pool,
            config: config.clone(),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The database pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Serves gRPC, consumes payment requests and relays the outbox until
    /// `shutdown`; then finishes the work in flight and closes the pool.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            listener,
            pool,
            config,
        } = self;
        let kafka = &config.kafka;
        let consumer = InboxConsumer::new(
            pool.clone(),
            kafka.consumer(&config.inbox.group_id)?,
            &kafka.topics.requests,
            PaymentRequestHandler::new(&kafka.topics.results),
            config.inbox.clone(),
        );
        let relay = Relay::new(pool.clone(), kafka.producer()?, config.relay.clone());
        let notifications =
            Listener::spawn(&config.database.url, &[outbox::CHANNEL], shutdown.clone());

        let (reporter, router) = grpc::base_router()?;
        reporter.set_serving::<PaymentsServer<PaymentsGrpc>>().await;
        let router = router.add_service(PaymentsServer::new(PaymentsGrpc::new(pool.clone())));
        tracing::info!(addr = %listener.local_addr()?, "payments gRPC listening");

        let (served, consumed, ()) = tokio::join!(
            grpc::serve(router, listener, shutdown.clone()),
            consumer.run(shutdown.clone()),
            relay.run(&notifications, shutdown.clone()),
        );
        pool.close();
        served?;
        consumed?;
        tracing::info!("payments stopped");
        Ok(())
    }
}

/// Applies migrations and returns (for the `migrate` subcommand).
pub async fn migrate_only(config: &PaymentsConfig) -> anyhow::Result<Vec<String>> {
    let pool = pool::connect(&config.database).await?;
    let applied = migrate::run(&pool, &migrations()?).await?;
    pool.close();
    Ok(applied)
}

/// Copies every dead letter back into the outbox (the `replay-dead-letters` subcommand).
pub async fn replay_dead_letters(config: &PaymentsConfig) -> anyhow::Result<u64> {
    let pool = pool::connect(&config.database).await?;
    let replayed = shop_db::dead_letter::replay_all(&pool).await?;
    pool.close();
    Ok(replayed)
}
