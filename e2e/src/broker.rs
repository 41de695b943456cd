//! A private tansu broker per test (in-memory, free port), so pausing or
//! restarting it disturbs no other test.

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

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    pub port: u16,
    child: Child,
}

impl Broker {
    /// Starts tansu on a free port and waits until it accepts connections.
    pub async fn start() -> Self {
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
        Self { port, child }
    }

    /// `host:port` for clients.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGSTOP: the broker freezes with its connections open.
    pub fn pause(&self) {
        crate::process::signal(self.child.id().expect("running"), "STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        crate::process::signal(self.child.id().expect("running"), "CONT");
    }
}
