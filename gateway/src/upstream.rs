//! gRPC clients of the services over lazily connected channels (the gateway
//! starts and stays up while a service is down). Each call carries its
//! deadline to the service ([`Upstreams::request`]).

use crate::GatewayConfig;
use shop_proto::orders::orders_client::OrdersClient;
use shop_proto::payments::payments_client::PaymentsClient;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Clients of both services; cheap to clone (channels are shared).
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub orders: OrdersClient<Channel>,
    pub payments: PaymentsClient<Channel>,
    orders_channel: Channel,
    payments_channel: Channel,
    timeout: Duration,
}

fn channel(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

impl Upstreams {
    /// Channels to both services; nothing connects until the first call.
    pub fn new(config: &GatewayConfig) -> anyhow::Result<Self> {
        let orders_channel = channel(&config.orders_url, config.upstream_timeout)?;
        let payments_channel = channel(&config.payments_url, config.upstream_timeout)?;
        Ok(Self {
            orders: OrdersClient::new(orders_channel.clone()),
            payments: PaymentsClient::new(payments_channel.clone()),
            orders_channel,
            payments_channel,
            timeout: config.upstream_timeout,
        })
    }

    /// `message` as a request whose deadline travels to the service
    /// (`grpc-timeout`), which stops working on it once it has passed.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// A streaming client without the per-call deadline (for WatchOrder).
    pub fn orders_stream_client(&self) -> OrdersClient<Channel> {
        OrdersClient::new(self.orders_channel.clone())
    }

    /// Whether both services answer their gRPC health check: (orders, payments).
    pub async fn health(&self) -> (bool, bool) {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let check = |channel: Channel| async move {
            let mut client = HealthClient::new(channel);
            let request = tonic::Request::new(HealthCheckRequest::default());
            let answer = tokio::time::timeout(Duration::from_secs(2), client.check(request)).await;
            matches!(answer, Ok(Ok(r)) if r.get_ref().status() == ServingStatus::Serving)
        };
        tokio::join!(
            check(self.orders_channel.clone()),
            check(self.payments_channel.clone())
        )
    }
}
