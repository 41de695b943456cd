//! PostgreSQL's own commit limit on this machine, measured in the same run:
//! `pgbench`, one single-row INSERT per transaction, 32 clients, 10 s.

use shop_testkit::TestDb;
use std::process::Command;

/// Commits per second, or `None` if pgbench is missing or failed.
pub async fn pg_commit_limit(clients: u32, seconds: u32) -> Option<f64> {
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
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
}
