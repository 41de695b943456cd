//! Startup behaviour: migrations, configuration errors, unreachable database.

use crate::helpers;
use shop_db::{DbConfig, migrate};
use shop_payments::persistence::migrations;
use shop_testkit::TestDb;
use std::process::Command;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn migrations_run_twice_are_a_no_op() {
    let app = helpers::spawn_app().await;
    let again = migrate::run(&app.pool, &migrations().expect("migrations"))
        .await
        .expect("second run succeeds");
    assert!(again.is_empty(), "nothing applied twice: {again:?}");
    let rows: i64 = app
        .pool
        .get()
        .await
        .expect("conn")
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .expect("history")
        .get(0);
    assert_eq!(rows as usize, migrations().expect("migrations").len());
    app.stop().await;
}

#[tokio::test]
async fn unreachable_database_fails_with_a_clear_error() {
    let db = TestDb::create("unused").await;
    let mut config = shop_testkit::service_config(&db, shop_testkit::kafka_config(1), "unused");
    config.database = DbConfig {
        pool_size: 2,
        connect_timeout: Duration::from_secs(2),
        ..DbConfig::for_url("postgres://postgres@127.0.0.1:1/payments")
    };
    let err = shop_payments::startup::build(&config, &CancellationToken::new())
        .await
        .expect_err("must fail");
    let text = format!("{err:#}");
    assert!(
        text.contains("cannot connect to the database postgres@127.0.0.1:1/payments"),
        "{text}"
    );
}

#[test]
fn binary_exits_non_zero_naming_the_problem() {
    let bin = env!("CARGO_BIN_EXE_payments");
    let out = Command::new(bin)
        .env(
            "PAYMENTS_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/payments",
        )
        .env("PAYMENTS_DATABASE_CONNECT_TIMEOUT_MS", "2000")
        .env("PAYMENTS_LISTEN_ADDR", "127.0.0.1:0")
        .env("PAYMENTS_METRICS_ADDR", "off")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to the database"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = Command::new(bin)
        .env("PAYMENTS_LISTEN_ADDR", "not-an-address")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PAYMENTS_LISTEN_ADDR"), "{stderr}");
}

#[tokio::test]
async fn test_database_is_dropped_with_its_guard() {
    let name = {
        let db = TestDb::create("guard").await;
        db.name().to_owned()
    };
    let (client, conn) = tokio_postgres::connect(&shop_testkit::admin_url(), tokio_postgres::NoTls)
        .await
        .expect("admin");
    tokio::spawn(conn);
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&name],
        )
        .await
        .expect("query")
        .get(0);
    assert!(!exists, "database {name} should be gone");
}
