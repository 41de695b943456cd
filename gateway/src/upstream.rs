//! gRPC clients of the services over lazily connected channels (the gateway
//! starts and stays up while a service is down). Each call carries its
//! deadline to the service ([`Upstreams::request`]).
//!
//! A service's URL may list several replicas, comma-separated
//! (`http://orders-1:50051,http://orders-2:50051`), and a host name may
//! stand for several (compose's `deploy.replicas`, a Kubernetes headless
//! service): one HTTP/2 connection would stick to one replica, so calls are
//! balanced over every address (power of two choices). Names are resolved
//! again every [`RESOLVE_EVERY`], and each replica's gRPC health is probed
//! every `PROBE_EVERY`: one that stops answering, or reports NOT_SERVING,
//! is taken out of the balancer until it is back (see `watch_replicas`).
//!
//! Every call is a CLIENT span whose context travels in the call's metadata
//! ([`Traced`]), so the service's spans join the request's trace.

use crate::GatewayConfig;
use shop_proto::orders::orders_client::OrdersClient;
use shop_proto::payments::payments_client::PaymentsClient;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

/// A channel whose calls are traced.
pub type Traced = shop_runtime::traces::GrpcClientTraced<Channel>;

/// Clients of both services; cheap to clone (channels are shared).
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub orders: OrdersClient<Traced>,
    pub payments: PaymentsClient<Traced>,
    orders_channel: Channel,
    payments_channel: Channel,
    timeout: Duration,
}

/// An endpoint for `url` with the gateway's connection settings.
fn endpoint(url: &str, timeout: Duration) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .tcp_nodelay(true))
}

/// One channel over every replica in `urls` (comma-separated).
fn channel(urls: &str, timeout: Duration) -> anyhow::Result<Channel> {
    let configured = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| endpoint(url, timeout))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let single_address = match configured.as_slice() {
        [] => anyhow::bail!("no upstream URL in {urls:?}"),
        [one] => one.uri().host().is_some_and(|h| {
            h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok()
        }),
        _ => false,
    };
    if single_address {
        return Ok(configured[0].connect_lazy());
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let (channel, changes) = Channel::balance_channel(16);
            runtime.spawn(watch_replicas(configured, timeout, changes));
            Ok(channel)
        }
        // Outside a runtime (never in the binary): balance without probes.
        Err(_) => Ok(Channel::balance_list(configured.into_iter())),
    }
}

/// How often each replica's health is probed.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// How often host names are resolved again, so that replicas a
/// deployment adds or removes are found.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// Every replica `configured` stands for: a plain `http` URL whose host is a
/// name becomes one endpoint per address the name resolves to. An IP
/// address, an `https` URL (its certificate names the host) or a name that
/// does not resolve just now stays as it is.
async fn resolve(configured: &[Endpoint], timeout: Duration) -> BTreeMap<String, Endpoint> {
    let mut replicas = BTreeMap::new();
    for template in configured {
        let uri = template.uri();
        let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
            replicas.insert(uri.to_string(), template.clone());
            continue;
        };
        let is_name = host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_err();
        let addresses = if is_name && uri.scheme_str() == Some("http") {
            tokio::net::lookup_host((host, port))
                .await
                .map(Iterator::collect::<Vec<_>>)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        if addresses.is_empty() {
            replicas.insert(uri.to_string(), template.clone());
            continue;
        }
        for address in addresses {
            let url = format!("http://{address}");
            match endpoint(&url, timeout) {
                Ok(endpoint) => {
                    replicas.insert(url, endpoint);
                }
                Err(_) => {
                    replicas.insert(uri.to_string(), template.clone());
                }
            }
        }
    }
    replicas
}

/// A replica the balancer knows of.
struct Replica {
    endpoint: Endpoint,
    /// A connection of its own for health probes.
    probe: Channel,
    present: bool,
    failures: u32,
}

/// Keeps the balancer's replicas to those that exist and answer (all of
/// them when none does). Every
/// [`RESOLVE_EVERY`] the configured URLs are resolved again: a new address
/// is put in the balancer, a vanished one taken out. Every
/// [`PROBE_EVERY`], each replica gets a gRPC health check on a connection
/// of its own; SERVING (or a server without the health service) puts it
/// back, two failures in a row (no connection, no answer within a second,
/// NOT_SERVING) take it out. Ends when the channel is dropped.
async fn watch_replicas(
    configured: Vec<Endpoint>,
    timeout: Duration,
    changes: Sender<Change<String, Endpoint>>,
) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let mut replicas: BTreeMap<String, Replica> = BTreeMap::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_resolve = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if tokio::time::Instant::now() >= next_resolve {
            next_resolve = tokio::time::Instant::now() + RESOLVE_EVERY;
            let found = resolve(&configured, timeout).await;
            let gone: Vec<String> = replicas
                .keys()
                .filter(|key| !found.contains_key(*key))
                .cloned()
                .collect();
            for key in gone {
                tracing::info!(replica = %key, "upstream replica no longer resolves: removed");
                if replicas.remove(&key).is_some_and(|r| r.present)
                    && changes.send(Change::Remove(key)).await.is_err()
                {
                    return;
                }
            }
            for (key, endpoint) in found {
                if replicas.contains_key(&key) {
                    continue;
                }
                // A new replica starts in the balancer; it is taken out after
                // two failed probes in a row (a single slow answer on a busy
                // host is no outage).
                tracing::info!(replica = %key, "upstream replica found: balancing over it");
                if changes
                    .send(Change::Insert(key.clone(), endpoint.clone()))
                    .await
                    .is_err()
                {
                    return;
                }
                let probe = endpoint.connect_lazy();
                replicas.insert(
                    key,
                    Replica {
                        endpoint,
                        probe,
                        present: true,
                        failures: 0,
                    },
                );
            }
        }
        let answers = futures::future::join_all(replicas.values().map(|replica| async move {
            let mut client = HealthClient::new(replica.probe.clone());
            let check = client.check(HealthCheckRequest::default());
            match tokio::time::timeout(Duration::from_secs(1), check).await {
                Ok(Ok(r)) => r.get_ref().status() == ServingStatus::Serving,
                Ok(Err(status)) => status.code() == tonic::Code::Unimplemented,
                Err(_) => false,
            }
        }))
        .await;
        for (replica, answered) in replicas.values_mut().zip(&answers) {
            replica.failures = if *answered { 0 } else { replica.failures + 1 };
        }
        // With every replica down, all stay in: calls then fail at once
        // (503, retry) instead of waiting for a replica until their deadline.
        let none_up = replicas.values().all(|r| r.failures >= 2);
        for (key, replica) in &mut replicas {
            let up = replica.failures < 2 || none_up;
            if up == replica.present {
                continue;
            }
            replica.present = up;
            let change = if up {
                tracing::info!(replica = %key, "upstream replica is up: balancing over it");
                Change::Insert(key.clone(), replica.endpoint.clone())
            } else {
                tracing::warn!(replica = %key, "upstream replica is down: skipped until it is back");
                Change::Remove(key.clone())
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
            orders: OrdersClient::new(Traced::new(orders_channel.clone())),
            payments: PaymentsClient::new(Traced::new(payments_channel.clone())),
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

    /// The client for WatchOrder: its requests get no `grpc-timeout` (the
    /// stream lives as long as its watcher); the channel's timeout bounds only
    /// the wait for the stream's first response.
    pub fn orders_stream_client(&self) -> OrdersClient<Traced> {
        OrdersClient::new(Traced::new(self.orders_channel.clone()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_host_name_stands_for_every_address_it_resolves_to() {
        let timeout = Duration::from_secs(1);
        let configured = [
            endpoint("http://localhost:50051", timeout).expect("url"),
            endpoint("http://10.0.0.7:50051", timeout).expect("url"),
            endpoint("https://orders.example:443", timeout).expect("url"),
        ];
        let found = resolve(&configured, timeout).await;
        let keys: Vec<&str> = found.keys().map(String::as_str).collect();
        assert!(keys.contains(&"http://127.0.0.1:50051"), "{keys:?}");
        assert!(keys.contains(&"http://10.0.0.7:50051/"), "{keys:?}");
        assert!(
            keys.contains(&"https://orders.example:443/"),
            "https keeps its name: {keys:?}"
        );
        assert!(!keys.iter().any(|k| k.contains("localhost")), "{keys:?}");
    }
}
