//! The faults, one at a time, chosen by the seeded generator. Every fault
//! undoes itself (a killed service is restarted, a frozen process thawed)
//! before the next one starts, except a replica's join or leave, which the
//! next membership fault of that service undoes.

use super::Rng;
use crate::{BrokerKind, Service, Stack};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

/// The kinds of fault, with their weights.
const ONE_REPLICA: &[(&str, u64)] = &[
    ("kill -9 orders", 18),
    ("kill -9 payments", 18),
    ("kill -9 gateway", 12),
    ("freeze broker", 10),
    ("freeze PostgreSQL", 8),
    ("restart PostgreSQL", 3),
    ("relay publishes again", 10),
    ("consumer group rewound to 0", 6),
    ("poison message", 15),
];

/// With replicas in consumer groups (on the mock cluster): a kill hits one
/// replica at random, replicas join and leave, the broker goes down. An
/// outside consumer cannot rewind a group the mock has seen (it refuses
/// commits from non-members), so that fault is left to the one-replica run.
const REPLICAS: &[(&str, u64)] = &[
    ("kill -9 orders", 14),
    ("kill -9 payments", 14),
    ("kill -9 gateway", 8),
    ("orders replica joins or leaves", 14),
    ("payments replica joins or leaves", 14),
    ("freeze broker", 8),
    ("freeze PostgreSQL", 8),
    ("restart PostgreSQL", 3),
    ("relay publishes again", 10),
    ("poison message", 15),
];

/// What was done, for the report and the checks.
#[derive(Debug, Default)]
pub struct Injected {
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Poison messages produced, per topic.
    pub poison: BTreeMap<String, i64>,
}

/// Injects `count` faults, pausing a little between them.
pub async fn inject(stack: &mut Stack, rng: &mut Rng, count: u64) -> Injected {
    let mut injected = Injected::default();
    let kinds = match stack.broker.kind() {
        BrokerKind::Mock => REPLICAS,
        BrokerKind::Tansu => ONE_REPLICA,
    };
    let total: u64 = kinds.iter().map(|(_, w)| w).sum();
    for n in 1..=count {
        tokio::time::sleep(Duration::from_millis(rng.between(100, 600))).await;
        let mut pick = rng.between(0, total - 1);
        let kind = kinds
            .iter()
            .find(|(_, w)| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .map_or("poison message", |(k, _)| k);
        let kind = apply(stack, rng, kind, &mut injected).await;
        eprintln!("fault {n}/{count}: {kind}");
        *injected.by_kind.entry(kind).or_default() += 1;
    }
    injected
}

/// Applies one fault; returns what was done.
async fn apply(
    stack: &mut Stack,
    rng: &mut Rng,
    kind: &'static str,
    injected: &mut Injected,
) -> &'static str {
    let pause = Duration::from_millis(rng.between(200, 1_500));
    match kind {
        "kill -9 orders" | "kill -9 payments" => {
            let service = if kind == "kill -9 orders" {
                Service::Orders
            } else {
                Service::Payments
            };
            let running: Vec<usize> = (0..stack.replicas(service).len())
                .filter(|&slot| stack.replica(service, slot).is_running())
                .collect();
            let slot = running[rng.between(0, running.len() as u64 - 1) as usize];
            let replica = stack.replica(service, slot);
            replica.kill9().await;
            tokio::time::sleep(pause).await;
            replica.start().await;
        }
        "orders replica joins or leaves" | "payments replica joins or leaves" => {
            let service = if kind.starts_with("orders") {
                Service::Orders
            } else {
                Service::Payments
            };
            // The last slot comes and goes; the others stay.
            let slot = stack.replicas(service).len() - 1;
            let replica = stack.replica(service, slot);
            if replica.is_running() {
                replica.terminate().await;
                return if service == Service::Orders {
                    "orders replica leaves (SIGTERM)"
                } else {
                    "payments replica leaves (SIGTERM)"
                };
            }
            replica.start().await;
            return if service == Service::Orders {
                "orders replica joins"
            } else {
                "payments replica joins"
            };
        }
        "kill -9 gateway" => {
            if let Some(gateway) = stack.gateway.as_mut() {
                gateway.kill9().await;
                tokio::time::sleep(pause).await;
                gateway.start().await;
            }
        }
        "freeze broker" => {
            stack.broker.pause();
            tokio::time::sleep(pause).await;
            stack.broker.resume();
        }
        "freeze PostgreSQL" => {
            let frozen = Frozen::postgres();
            tokio::time::sleep(pause.min(Duration::from_millis(800))).await;
            drop(frozen);
        }
        "restart PostgreSQL" => restart_postgres().await,
        "relay publishes again" => {
            let db = if rng.chance(50) {
                stack.orders_db.config()
            } else {
                stack.payments_db.config()
            };
            // As if a relay had published and crashed before moving its
            // cursor: the last 20 rows go out again, through the retry path.
            execute(
                &db.url,
                "UPDATE outbox SET retry_at = now() WHERE id IN (
                     SELECT id FROM outbox WHERE parked_at IS NULL ORDER BY id DESC LIMIT 20)",
            )
            .await;
        }
        "consumer group rewound to 0" => {
            let kafka = stack.kafka();
            let (service, topic) = if rng.chance(50) {
                ("orders", kafka.topics.results.clone())
            } else {
                ("payments", kafka.topics.requests.clone())
            };
            let process = if service == "orders" {
                &mut stack.orders
            } else {
                &mut stack.payments
            };
            process.kill9().await;
            let group = stack.consumer_group(service);
            rewind(&kafka.brokers, &group, &topic, kafka.topics.partitions).await;
            let process = if service == "orders" {
                &mut stack.orders
            } else {
                &mut stack.payments
            };
            process.start().await;
        }
        _ => {
            let kafka = stack.kafka();
            let topic = if rng.chance(50) {
                kafka.topics.requests.clone()
            } else {
                kafka.topics.results.clone()
            };
            let key = uuid::Uuid::new_v4().to_string();
            shop_testkit::produce_raw(&kafka, &topic, &key, b"\xff\x00 chaos poison", &[]).await;
            *injected.poison.entry(topic).or_default() += 1;
        }
    }
    kind
}

/// Every PostgreSQL process stopped (SIGSTOP) until this is dropped.
struct Frozen(Vec<u32>);

impl Frozen {
    fn postgres() -> Self {
        let pids: Vec<u32> = std::fs::read_dir("/proc")
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|pid| {
                        std::fs::read_to_string(format!("/proc/{pid}/comm"))
                            .is_ok_and(|c| c.trim() == "postgres")
                    })
                    .collect()
            })
            .unwrap_or_default();
        for pid in &pids {
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status();
        }
        Self(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

/// `pg_ctlcluster <version> main restart` (fast mode), then waits until it
/// accepts connections again.
async fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned());
    let Some(version) = version else {
        eprintln!("  (no /etc/postgresql: PostgreSQL not restarted)");
        return;
    };
    let status = tokio::process::Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            &version,
            "main",
            "restart",
            "-m",
            "fast",
        ])
        .status()
        .await;
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("  (pg_ctlcluster restart failed)");
    }
    let url = shop_testkit::admin_url();
    for _ in 0..300 {
        if tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn execute(url: &str, sql: &str) {
    match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            if let Err(e) = client.batch_execute(sql).await {
                eprintln!("  ({e})");
            }
        }
        Err(e) => eprintln!("  ({e})"),
    }
}

/// Commits offset 0 for every partition of `topic` under `group`.
pub async fn rewind(brokers: &str, group: &str, topic: &str, partitions: i32) {
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    let done = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| e.to_string())?;
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(&topic, p, Offset::Offset(0))
                .map_err(|e| e.to_string())?;
        }
        consumer.assign(&list).map_err(|e| e.to_string())?;
        consumer
            .commit(&list, CommitMode::Sync)
            .map_err(|e| e.to_string())
    })
    .await;
    if let Ok(Err(e)) | Err(e) = done.map_err(|e| e.to_string()) {
        eprintln!("  (rewind failed: {e})");
    }
}
