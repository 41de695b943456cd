//! How the orders service is assembled, in the order its parts depend on
//! each other: the database (migrated), the topics, the NOTIFY listener, the
//! relay that publishes its outbox (`PaymentRequested`,
//! `CancellationRequested`, `RefundRequested` on the requests topic), the
//! consumer of the results topic with its handler ([`OnPaymentCompleted`]),
//! the gRPC API with health and reflection, and the expiry sweep of unpaid
//! orders ([`expiry`]).
//! The parts are handed, as a named [`Service`], to the run function every
//! service shares.

use crate::config::SPEC;
use crate::expiry::{self, ExpiryConfig};
use crate::grpc::{OrdersGrpc, OrdersServer};
use crate::on_payment_completed::OnPaymentCompleted;
use crate::persistence;
use crate::watch::Watchers;
use shop_db::inbox::InboxConsumer;
use shop_db::listen::Listener;
use shop_db::outbox::{self, RelayWake};
use shop_db::pool;
use shop_db::relay::Relay;
use shop_db::retention::Retention;
use shop_runtime::grpc;
use shop_service::{Job, Service, ServiceConfig};
use tokio_util::sync::CancellationToken;

/// Builds every part of the orders service, with the payment timeout from
/// `ORDERS_PAYMENT_TIMEOUT_MS`; nothing runs until
/// [`Service::run_until_stopped`]. Background tasks stop on `shutdown`.
pub async fn build(
    config: &ServiceConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<Service<OnPaymentCompleted>> {
    let expiry = ExpiryConfig::from_env(&shop_runtime::Env::from_process(SPEC.prefix))?;
    build_with(config, expiry, shutdown).await
}

/// [`build`] with the expiry given (tests).
pub async fn build_with(
    config: &ServiceConfig,
    expiry: ExpiryConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<Service<OnPaymentCompleted>> {
    let pool = config.open_database(&persistence::migrations()?).await?;
    config.create_topics().await?;
    let topics = &config.kafka.topics;

    // NOTIFY fan-out: status changes for watchers (from any replica), and
    // outside writers' hints for the relay.
    let notifications = Listener::spawn(
        &config.database.url,
        &[outbox::CHANNEL, persistence::STATUS_CHANNEL],
        shutdown.clone(),
    );
    // Whoever commits outbox rows in this process wakes this relay.
    let wake = RelayWake::new();
    let relay = Relay::new(
        pool::connect_for_relay(&config.database).await?,
        config.kafka.producer()?,
        config.relay.clone(),
        wake.clone(),
    );
    let consumer = InboxConsumer::new(
        pool.clone(),
        config.kafka.consumer(&config.inbox.group_id)?,
        &topics.results,
        OnPaymentCompleted,
        config.inbox.clone(),
        wake.clone(),
    );

    // The API has its own connections, with a short lock timeout.
    let orders = OrdersGrpc::new(
        pool::connect_for_api(&config.database).await?,
        config.database.api_calls_per_key,
        wake.clone(),
        Watchers::spawn(&notifications, shutdown.clone()),
        &topics.requests,
        expiry.timeout.saturating_sub(expiry.clock_margin),
        shutdown.clone(),
    );
    let (health, router) = grpc::base_router(SPEC.grpc_service)?;
    health.serving().await;
    let router = router.add_service(OrdersServer::new(orders));
    let listener = config.bind().await?;

    let retention = Retention::new(
        pool.clone(),
        config.retention.clone(),
        &persistence::RETENTION,
    );

    // Unpaid orders are cancelled after the payment timeout.
    let sweep = {
        let (pool, topic) = (pool.clone(), topics.requests.clone());
        Job {
            name: "order expiry sweep",
            run: Box::new(move |token| Box::pin(expiry::run(pool, expiry, topic, wake, token))),
        }
    };

    Ok(Service {
        pool,
        listener,
        grpc: router,
        health,
        notifications,
        relay,
        consumer,
        retention,
        jobs: vec![sweep],
    })
}
