//! How the payments service is assembled, in the order its parts depend on
//! each other: the database (migrated), the topics, the NOTIFY listener, the
//! relay that publishes its outbox (`PaymentCompleted` on the results
//! topic), the consumer of the requests topic with its handler
//! ([`OnPaymentRequested`]), and the gRPC API with health and reflection.
//! The parts are handed, as a named [`Service`], to the run function every
//! service shares.

use crate::config::SPEC;
use crate::grpc::{PaymentsGrpc, PaymentsServer};
use crate::on_payment_requested::OnPaymentRequested;
use crate::persistence;
use shop_db::inbox::InboxConsumer;
use shop_db::listen::Listener;
use shop_db::outbox::{self, RelayWake};
use shop_db::pool;
use shop_db::relay::Relay;
use shop_db::retention::Retention;
use shop_runtime::grpc;
use shop_service::{Service, ServiceConfig};
use tokio_util::sync::CancellationToken;

/// Builds every part of the payments service; nothing runs until
/// [`Service::run_until_stopped`]. Background tasks stop on `shutdown`.
pub async fn build(
    config: &ServiceConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<Service<OnPaymentRequested>> {
    let pool = config.open_database(&persistence::migrations()?).await?;
    config.create_topics().await?;
    let topics = &config.kafka.topics;

    // NOTIFY fan-out: outside writers' hints for the relay.
    let notifications = Listener::spawn(&config.database.url, &[outbox::CHANNEL], shutdown.clone());
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
        &topics.requests,
        OnPaymentRequested::new(&topics.results),
        config.inbox.clone(),
        wake,
    );

    // The API has its own connections, with a short lock timeout.
    let payments = PaymentsGrpc::new(
        pool::connect_for_api(&config.database).await?,
        config.database.api_calls_per_key,
    );
    let (health, router) = grpc::base_router(SPEC.grpc_service)?;
    health.serving().await;
    let router = router.add_service(PaymentsServer::new(payments));
    let listener = config.bind().await?;

    let retention = Retention::new(
        pool.clone(),
        config.retention.clone(),
        &persistence::RETENTION,
    );

    Ok(Service {
        pool,
        listener,
        grpc: router,
        health,
        notifications,
        relay,
        consumer,
        retention,
        jobs: Vec::new(),
    })
}
