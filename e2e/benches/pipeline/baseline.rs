//! PostgreSQL's own commit limit on this machine, measured in the same run:
//! `pgbench`, one single-row INSERT per transaction, 32 clients, 10 s; and
//! PostgreSQL's CPU per such transaction, the unit its cost per order is
//! compared with (`pg_cpu_per_order_vs_pgbench_commit`).

use shop_testkit::TestDb;
use std::process::Command;

/// What pgbench measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Baseline {
    /// Commits per second.
    pub tps: f64,
    /// PostgreSQL's CPU milliseconds per committed transaction.
    pub pg_cpu_ms_per_commit: f64,
}

/// The baseline, or `None` if pgbench is missing or failed.
pub async fn pg_commit_limit(clients: u32, seconds: u32) -> Option<Baseline> {
    let db = TestDb::create("pgbench").await;
    let (client, connection) = tokio_postgres::connect(&db.config().url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE commits (id bigserial PRIMARY KEY, v int NOT NULL)")
        .await
        .ok()?;
    let script = std::env::temp_dir().join(format!("pgbench-{}.sql", std::process::id()));
    std::fs::write(&script, "INSERT INTO commits (v) VALUES (1);\n").ok()?;
    let url = db.config().url.clone();
    let script_file = script.clone();
    let before = postgres_cpu_ticks();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("pgbench")
            .args(["-n", "-c", &clients.to_string(), "-j", "2"])
            .args(["-T", &seconds.to_string(), "-f"])
            .arg(&script_file)
            .arg(&url)
            .output()
    })
    .await
    .ok()?
    .ok()?;
    let spent = postgres_cpu_ticks().saturating_sub(before) as f64 / 100.0;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout);
    let tps: f64 = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())?;
    let transactions: f64 = text
        .lines()
        .find(|l| l.starts_with("number of transactions actually processed:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(tps * f64::from(seconds));
    Some(Baseline {
        tps,
        pg_cpu_ms_per_commit: spent * 1e3 / transactions.max(1.0),
    })
}

/// Clock ticks of every PostgreSQL process, plus what the postmaster has
/// collected from the backends that already exited (pgbench's backends end
/// with it): `utime + stime + cutime + cstime` from `/proc/*/stat`.
pub fn postgres_cpu_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command, which is in parentheses: state is 3rd;
            // utime, stime, cutime, cstime are the 14th to 17th.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let tick = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
            Some(tick(14)? + tick(15)? + tick(16)? + tick(17)?)
        })
        .sum()
}
