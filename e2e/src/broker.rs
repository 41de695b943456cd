//! A private broker per test, so pausing or restarting it disturbs no other
//! test: either tansu (in-memory, a process on a free port) or librdkafka's
//! mock cluster (three brokers in this process, serving the Kafka protocol on
//! loopback sockets). The mock's group coordinator expires killed members
//! and implements cooperative rebalancing, which tansu 0.6.0's does not (see
//! the README's test-broker defects), so the group-mode tests use it.

use shop_testkit::MockBrokers;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The tansu binary: `SHOP_TANSU_BIN`, else the one `make` installs, else PATH.
pub fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("SHOP_TANSU_BIN") {
        return bin.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = PathBuf::from(home).join(".cache/shop-tools/bin/tansu");
    if cached.exists() {
        cached
    } else {
        "tansu".into()
    }
}

/// Which broker a stack runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// tansu 0.6.0: the broker of `make up`.
    Tansu,
    /// librdkafka's mock cluster of three brokers, hosted by this process.
    Mock,
}

/// A running broker.
pub enum Broker {
    Tansu { port: u16, child: Child },
    Mock(MockBrokers),
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tansu { port, .. } => write!(f, "Broker::Tansu(127.0.0.1:{port})"),
            Self::Mock(brokers) => write!(f, "Broker::Mock({})", brokers.bootstrap_servers()),
        }
    }
}

impl Broker {
    /// Starts a broker of `kind` with `topics` (of `partitions` each) created
    /// on the mock (it has no CreateTopics; the services find them there).
    pub async fn start(kind: BrokerKind, topics: &[&str], partitions: i32) -> Self {
        match kind {
            BrokerKind::Tansu => Self::start_tansu().await,
            BrokerKind::Mock => {
                let brokers = MockBrokers::start(3);
                for topic in topics {
                    brokers.create_topic(topic, partitions);
                }
                Self::Mock(brokers)
            }
        }
    }

    /// Starts tansu on a free port and waits until it accepts connections.
    async fn start_tansu() -> Self {
        let port = crate::process::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("tansu starts (install it with `make tools`)");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tansu did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self::Tansu { port, child }
    }

    pub fn kind(&self) -> BrokerKind {
        match self {
            Self::Tansu { .. } => BrokerKind::Tansu,
            Self::Mock(_) => BrokerKind::Mock,
        }
    }

    /// The bootstrap list for clients.
    pub fn address(&self) -> String {
        match self {
            Self::Tansu { port, .. } => format!("127.0.0.1:{port}"),
            Self::Mock(brokers) => brokers.bootstrap_servers(),
        }
    }

    /// The broker's process id (none for the in-process mock).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Tansu { child, .. } => child.id(),
            Self::Mock(_) => None,
        }
    }

    /// Takes the broker away: tansu freezes with its connections open
    /// (SIGSTOP); the mock's brokers all go down (connections closed, new
    /// ones refused).
    pub fn pause(&self) {
        match self {
            Self::Tansu { child, .. } => {
                crate::process::signal(child.id().expect("running"), "STOP");
            }
            Self::Mock(brokers) => {
                let cluster = brokers.cluster();
                for id in brokers.ids() {
                    cluster.broker_down(id).expect("mock broker goes down");
                }
            }
        }
    }

    /// Undoes [`Broker::pause`].
    pub fn resume(&self) {
        match self {
            Self::Tansu { child, .. } => {
                crate::process::signal(child.id().expect("running"), "CONT");
            }
            Self::Mock(brokers) => {
                let cluster = brokers.cluster();
                for id in brokers.ids() {
                    cluster.broker_up(id).expect("mock broker comes up");
                }
            }
        }
    }
}
