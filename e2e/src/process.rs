//! One service binary as a child process: start, health-wait, kill -9,
//! restart on the same port, graceful stop; logs kept in a file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Where cargo put the workspace binaries (next to this test's `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// A free loopback port (bound, then released), never one this process
/// handed out before: the kernel may offer a released port again, and two
/// processes of a stack (or a stopped one restarting) would then clash.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if given.insert(port) {
            return port;
        }
    }
}

/// Sends `signal` (e.g. "STOP", "CONT", "KILL", "TERM") to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// How to tell that a process is ready.
#[derive(Debug, Clone)]
pub enum Probe {
    /// `grpc.health.v1.Health/Check` answers SERVING.
    Grpc,
    /// `GET http://{addr}{path}` answers 200.
    Http(&'static str),
}

impl Probe {
    async fn ready(&self, addr: SocketAddr) -> bool {
        match self {
            Self::Grpc => shop_runtime::grpc::check_health(addr, "", Duration::from_secs(1))
                .await
                .is_ok(),
            Self::Http(path) => reqwest::get(format!("http://{addr}{path}"))
                .await
                .is_ok_and(|r| r.status().is_success()),
        }
    }
}

/// A service binary with its environment.
#[derive(Debug)]
pub struct ServiceProcess {
    name: String,
    probe: Probe,
    env: BTreeMap<String, String>,
    pub addr: SocketAddr,
    /// Its Prometheus endpoint, when it has one.
    pub metrics: Option<SocketAddr>,
    log_name: String,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl ServiceProcess {
    /// Prepares `name` (a binary of the workspace) to listen on `addr`.
    pub fn new(
        name: &str,
        addr: SocketAddr,
        env: BTreeMap<String, String>,
        log_dir: &Path,
    ) -> Self {
        Self {
            name: name.to_owned(),
            probe: Probe::Grpc,
            env,
            addr,
            metrics: None,
            log_name: name.to_owned(),
            log: log_dir.join(format!("{name}.log")),
            child: None,
            starts: 0,
        }
    }

    /// Uses `probe` instead of the gRPC health check.
    pub fn with_probe(mut self, probe: Probe) -> Self {
        self.probe = probe;
        self
    }

    /// Logs to `{name}.log` (replicas of one binary need one each).
    pub fn with_log_name(mut self, name: &str) -> Self {
        self.log.set_file_name(format!("{name}.log"));
        self.log_name = name.to_owned();
        self
    }

    /// Records where its metrics are served.
    pub fn with_metrics(mut self, addr: SocketAddr) -> Self {
        self.metrics = Some(addr);
        self
    }

    /// The name of its log file, without `.log`.
    pub fn log_name(&self) -> &str {
        &self.log_name
    }

    /// How many times it was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Whether it was started and has not been stopped since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Spawns the process and waits until its health check passes.
    pub async fn start(&mut self) {
        let bin = bin_dir().join(&self.name);
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --workspace --bins` first",
            bin.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&bin)
            .arg("serve")
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("service starts");
        self.child = Some(child);
        self.starts += 1;
        self.wait_healthy().await;
    }

    async fn wait_healthy(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if self.probe.ready(self.addr).await {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{} exited with {status} during start:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not healthy in time:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// `kill -9`: no shutdown code runs.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("SIGKILL");
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id().expect("pid"), "TERM");
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("stops within 30 s")
            .expect("exit status")
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().rev().take(40).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
