//! gRPC clients of the services over lazily connected channels (the gateway
//! starts and stays up while a service is down). Each call carries its
//! deadline to the service ([`Upstreams::request`]).
//!
//! A service's URL may list several replicas, comma-separated
//! (`http://orders-1:50051,http://orders-2:50051`): one HTTP/2 connection
//! would stick to one replica, so calls are balanced over all of them
//! (power of two choices). Each replica's gRPC health is probed every
//! 500 ms: one that stops answering, or reports NOT_SERVING, is taken out of
//! the balancer until it is back (see [`watch_replicas`]).

use crate::GatewayConfig;
use shop_proto::orders::orders_client::OrdersClient;
use shop_proto::payments::payments_client::PaymentsClient;
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use tonic::transport::channel::Change;
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

/// One channel over every replica in `urls` (comma-separated).
fn channel(urls: &str, timeout: Duration) -> anyhow::Result<Channel> {
    let endpoints = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            Ok(Endpoint::from_shared(url.to_owned())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(timeout)
                .tcp_nodelay(true))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    match endpoints.as_slice() {
        [] => anyhow::bail!("no upstream URL in {urls:?}"),
        [one] => Ok(one.connect_lazy()),
        _ => match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let (channel, changes) = Channel::balance_channel(endpoints.len());
                runtime.spawn(watch_replicas(endpoints, changes));
                Ok(channel)
            }
            // Outside a runtime (never in the binary): balance without probes.
            Err(_) => Ok(Channel::balance_list(endpoints.into_iter())),
        },
    }
}

/// How often each replica's health is probed.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Keeps the balancer's replicas to those that answer: every
/// [`PROBE_EVERY`], each replica gets a gRPC health check on a connection
/// of its own; SERVING (or a server without the health service) puts it
/// back, two failures in a row (no connection, no answer within a second,
/// NOT_SERVING) take it out. Ends when the channel is dropped.
async fn watch_replicas(endpoints: Vec<Endpoint>, changes: Sender<Change<usize, Endpoint>>) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let probes: Vec<Channel> = endpoints.iter().map(Endpoint::connect_lazy).collect();
    // Every replica starts in the balancer; one is taken out after two
    // failed probes in a row (a single slow answer on a busy host is no outage).
    for (i, endpoint) in endpoints.iter().enumerate() {
        if changes
            .send(Change::Insert(i, endpoint.clone()))
            .await
            .is_err()
        {
            return;
        }
    }
    let mut present = vec![true; endpoints.len()];
    let mut failures = vec![0_u32; endpoints.len()];
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let answers = futures::future::join_all(probes.iter().map(|probe| async move {
            let mut client = HealthClient::new(probe.clone());
            let check = client.check(HealthCheckRequest::default());
            match tokio::time::timeout(Duration::from_secs(1), check).await {
                Ok(Ok(r)) => r.get_ref().status() == ServingStatus::Serving,
                Ok(Err(status)) => status.code() == tonic::Code::Unimplemented,
                Err(_) => false,
            }
        }))
        .await;
        for (i, answered) in answers.into_iter().enumerate() {
            failures[i] = if answered { 0 } else { failures[i] + 1 };
            let up = failures[i] < 2;
            if up == present[i] {
                continue;
            }
            present[i] = up;
            let uri = endpoints[i].uri().to_string();
            let change = if up {
                tracing::info!(replica = %uri, "upstream replica is up: balancing over it");
                Change::Insert(i, endpoints[i].clone())
            } else {
                tracing::warn!(replica = %uri, "upstream replica is down: skipped until it is back");
                Change::Remove(i)
            };
            if changes.send(change).await.is_err() {
                return; // the channel is gone
            }
        }
    }
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
