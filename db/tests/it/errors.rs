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
