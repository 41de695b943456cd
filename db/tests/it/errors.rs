//! Which database failures count as transient, against a real PostgreSQL.

use shop_db::DbError;
use tokio_postgres::NoTls;

async fn connect() -> tokio_postgres::Client {
    let url = std::env::var("SHOP_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("tests need PostgreSQL");
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn bad_statements_and_conversions_are_permanent() {
    let client = connect().await;
    let syntax = client
        .query("SELEC 1", &[])
        .await
        .expect_err("syntax error");
    assert!(!DbError::from(syntax).is_transient());
    let row = client
        .query_one("SELECT 'text'::text", &[])
        .await
        .expect("query");
    let conversion = row.try_get::<_, i64>(0).expect_err("wrong type");
    assert!(!DbError::from(conversion).is_transient());
    let check = client
        .query("SELECT 1 / 0", &[])
        .await
        .expect_err("division by zero");
    assert!(!DbError::from(check).is_transient());
}

#[tokio::test]
async fn a_lost_connection_is_transient() {
    let client = connect().await;
    let killed = client
        .query("SELECT pg_terminate_backend(pg_backend_pid())", &[])
        .await
        .expect_err("the server ends our own session");
    assert!(DbError::from(killed).is_transient());
    let after = client.query("SELECT 1", &[]).await.expect_err("closed");
    assert!(DbError::from(after).is_transient());
}

#[tokio::test]
async fn lock_and_statement_timeouts_are_transient() {
    let holder = connect().await;
    let waiter = connect().await;
    let table = format!("locked_{}", uuid::Uuid::new_v4().simple());
    holder
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY); INSERT INTO {table} VALUES (1)"
        ))
        .await
        .expect("table");
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM {table} WHERE id = 1 FOR UPDATE"
        ))
        .await
        .expect("row locked");
    let lock = waiter
        .batch_execute(&format!(
            "SET lock_timeout = 50; SELECT 1 FROM {table} WHERE id = 1 FOR UPDATE"
        ))
        .await
        .expect_err("lock_timeout");
    assert!(DbError::from(lock).is_transient(), "lock_timeout (55P03)");
    let statement = waiter
        .batch_execute("SET lock_timeout = 0; SET statement_timeout = 50; SELECT pg_sleep(1)")
        .await
        .expect_err("statement_timeout");
    assert!(
        DbError::from(statement).is_transient(),
        "statement_timeout (57014)"
    );
    holder
        .batch_execute(&format!("ROLLBACK; DROP TABLE {table}"))
        .await
        .expect("cleanup");
}
