//! One account's row locked by another session (a frozen replica mid-batch,
//! an operator's open transaction): the locked user's calls fail in time
//! with UNAVAILABLE or a passed deadline, every other user is served as
//! usual, and once the lock goes, retries with the same keys give definite
//! answers and credit each top-up once.

use crate::helpers::spawn_app;
use shop_proto::payments::{CreateAccountRequest, GetAccountRequest, TopUpRequest};
use std::time::{Duration, Instant};
use tonic::{Code, Request};
use uuid::Uuid;

/// The deadline every call of this test carries, as the gateway's do.
const DEADLINE: Duration = Duration::from_secs(5);

fn with_deadline<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(DEADLINE);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_account_row_does_not_starve_other_users() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let locked = Uuid::new_v4().to_string();
    let others: Vec<String> = (0..8).map(|_| Uuid::new_v4().to_string()).collect();
    for user in std::iter::once(&locked).chain(&others) {
        client
            .create_account(CreateAccountRequest {
                user_id: user.clone(),
                idempotency_key: String::new(),
            })
            .await
            .expect("account opens");
    }

    // Another session takes the row lock and keeps it.
    let (locker, connection) = tokio_postgres::connect(&app.db.config().url, tokio_postgres::NoTls)
        .await
        .expect("locker connects");
    tokio::spawn(connection);
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM accounts WHERE user_id = '{locked}' FOR UPDATE"
        ))
        .await
        .expect("row locked");

    // 24 top-ups of the locked user at once …
    let mut blocked = Vec::new();
    for i in 0..24 {
        let mut client = app.client.clone();
        let user = locked.clone();
        blocked.push(tokio::spawn(async move {
            let started = Instant::now();
            let outcome = client
                .top_up(with_deadline(TopUpRequest {
                    user_id: user,
                    amount: 10,
                    idempotency_key: format!("locked-{i}"),
                }))
                .await;
            (outcome.map(|_| ()), started.elapsed())
        }));
    }
    // … while the other users keep calling for 5 s.
    let mut served = Vec::new();
    for user in &others {
        let mut client = app.client.clone();
        let user = user.clone();
        served.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let until = Instant::now() + Duration::from_secs(5);
            let mut n = 0;
            while Instant::now() < until {
                n += 1;
                let started = Instant::now();
                let outcome = if n % 2 == 0 {
                    client
                        .top_up(with_deadline(TopUpRequest {
                            user_id: user.clone(),
                            amount: 1,
                            idempotency_key: format!("other-{n}"),
                        }))
                        .await
                        .map(|_| ())
                } else {
                    client
                        .get_account(with_deadline(GetAccountRequest {
                            user_id: user.clone(),
                        }))
                        .await
                        .map(|_| ())
                };
                latencies.push(started.elapsed());
                if let Err(status) = outcome {
                    errors.push(status);
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    for task in served {
        let (mut l, errors) = task.await.expect("task");
        assert!(errors.is_empty(), "other users got errors: {errors:?}");
        latencies.append(&mut l);
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "other users while one row is locked: {} calls, p99 {} ms",
        latencies.len(),
        p99.as_millis()
    );
    assert!(p99 < Duration::from_secs(1), "other users' p99 {p99:?}");

    for task in blocked {
        let (outcome, took) = task.await.expect("task");
        assert!(
            took < DEADLINE + Duration::from_secs(1),
            "a blocked call waited {took:?}"
        );
        match outcome {
            Err(status) => assert!(
                matches!(
                    status.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                ),
                "{status:?}"
            ),
            Ok(()) => panic!("a top-up of the locked account went through"),
        }
    }

    // The lock goes; retries with the same keys settle every top-up once.
    locker.batch_execute("ROLLBACK").await.expect("unlocked");
    for i in 0..24 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let outcome = client
                .top_up(with_deadline(TopUpRequest {
                    user_id: locked.clone(),
                    amount: 10,
                    idempotency_key: format!("locked-{i}"),
                }))
                .await;
            match outcome {
                Ok(_) => break,
                Err(status) if Instant::now() < deadline && status.code() == Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!("retry {i} failed: {status:?}"),
            }
        }
    }
    let balance = client
        .get_account(GetAccountRequest {
            user_id: locked.clone(),
        })
        .await
        .expect("account")
        .into_inner()
        .account
        .expect("account")
        .balance;
    assert_eq!(balance, 240, "each top-up credited once");
    app.stop().await;
}
