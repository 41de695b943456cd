//! The invariant of the delivery guarantees (docs/architecture.md), checked from the two databases at a quiet
//! moment: every order is final; every order has exactly one ledger row whose
//! decision (and refund, at most one) matches the order's status; and for
//! every user `balance == Σ credits − Σ amounts of FINISHED orders`.
//!
//! | order | ledger |
//! |---|---|
//! | FINISHED | PAID, no refund |
//! | CANCELLED, INSUFFICIENT_FUNDS / ACCOUNT_NOT_FOUND | that decision, no refund |
//! | CANCELLED, CANCELLED_BY_USER / EXPIRED | VOIDED or declined, no refund; or PAID with a CANCELLATION refund |
//! | REFUNDED | PAID with a REFUND refund |

use shop_db::Pool;
use std::collections::HashMap;
use uuid::Uuid;

/// What the check saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub orders: usize,
    pub finished: usize,
    pub cancelled: usize,
    /// Of the cancelled: by the customer or expired (the rest were declined).
    pub taken_back: usize,
    pub refunded: usize,
    pub users: usize,
}

/// Waits until no order of `stack` is pending (up to `within`), then runs
/// [`check`]; panics with the diagnosis and the logs if either fails.
pub async fn settled_and_consistent(stack: &crate::Stack, within: std::time::Duration) -> Summary {
    let (orders, payments) = stack.pools().await;
    let deadline = tokio::time::Instant::now() + within;
    while pending_orders(&orders).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "orders not final after {within:?}:\n{}\n{}",
            diagnose(&orders, &payments).await,
            stack.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (summary, problems) = check(&orders, &payments).await;
    assert!(
        problems.is_empty(),
        "invariant broken: {problems:#?}\n{}",
        stack.logs()
    );
    summary
}

/// How many orders are not final yet (NEW, CANCELLING or REFUNDING).
pub async fn pending_orders(orders: &Pool) -> i64 {
    let client = orders.get().await.expect("orders db");
    client
        .query_one(
            "SELECT count(*) FROM orders WHERE status IN ('NEW', 'CANCELLING', 'REFUNDING')",
            &[],
        )
        .await
        .expect("count")
        .get(0)
}

/// Checks everything; returns the violations (empty when all holds).
pub async fn check(orders: &Pool, payments: &Pool) -> (Summary, Vec<String>) {
    let orders = orders.get().await.expect("orders db");
    let payments = payments.get().await.expect("payments db");
    let mut problems = Vec::new();
    let mut summary = Summary::default();

    let order_rows = orders
        .query(
            "SELECT id, user_id, amount, status, cancel_reason FROM orders",
            &[],
        )
        .await
        .expect("orders");
    // Each order's decision and its refund's kind (if any).
    let ledger: HashMap<Uuid, (String, Option<String>)> = payments
        .query(
            "SELECT p.order_id, coalesce(p.outcome, 'UNDECIDED'), r.kind
             FROM payments p LEFT JOIN refunds r USING (order_id)",
            &[],
        )
        .await
        .expect("ledger")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let mut finished_by_user: HashMap<Uuid, i64> = HashMap::new();
    for row in &order_rows {
        let (id, user, amount): (Uuid, Uuid, i64) = (row.get(0), row.get(1), row.get(2));
        let (status, reason): (String, Option<String>) = (row.get(3), row.get(4));
        summary.orders += 1;
        let allowed: &[(&str, Option<&str>)] = match (status.as_str(), reason.as_deref()) {
            ("FINISHED", _) => {
                summary.finished += 1;
                *finished_by_user.entry(user).or_default() += amount;
                &[("PAID", None)]
            }
            ("CANCELLED", Some("INSUFFICIENT_FUNDS")) => {
                summary.cancelled += 1;
                &[("INSUFFICIENT_FUNDS", None)]
            }
            ("CANCELLED", Some("ACCOUNT_NOT_FOUND")) => {
                summary.cancelled += 1;
                &[("ACCOUNT_NOT_FOUND", None)]
            }
            ("CANCELLED", Some("CANCELLED_BY_USER" | "EXPIRED")) => {
                summary.cancelled += 1;
                summary.taken_back += 1;
                &[
                    ("VOIDED", None),
                    ("INSUFFICIENT_FUNDS", None),
                    ("ACCOUNT_NOT_FOUND", None),
                    ("PAID", Some("CANCELLATION")),
                ]
            }
            ("REFUNDED", None) => {
                summary.refunded += 1;
                &[("PAID", Some("REFUND"))]
            }
            _ => {
                problems.push(format!("order {id} is not final: {status}/{reason:?}"));
                continue;
            }
        };
        match ledger.get(&id) {
            Some((outcome, refund))
                if allowed
                    .iter()
                    .any(|(o, r)| o == outcome && *r == refund.as_deref()) => {}
            Some((outcome, refund)) => problems.push(format!(
                "order {id} is {status}/{reason:?} but the ledger says {outcome} with refund {refund:?}"
            )),
            None => problems.push(format!("order {id} has no ledger row")),
        }
    }
    if ledger.len() != order_rows.len() {
        problems.push(format!(
            "{} ledger rows for {} orders",
            ledger.len(),
            order_rows.len()
        ));
    }

    let accounts = payments
        .query(
            "SELECT a.user_id, a.balance, coalesce((SELECT sum(amount) FROM credits c WHERE c.user_id = a.user_id), 0)::bigint
             FROM accounts a",
            &[],
        )
        .await
        .expect("accounts");
    for row in &accounts {
        let (user, balance, credits): (Uuid, i64, i64) = (row.get(0), row.get(1), row.get(2));
        summary.users += 1;
        let spent = finished_by_user.get(&user).copied().unwrap_or(0);
        if balance != credits - spent {
            problems.push(format!(
                "user {user}: balance {balance} != credits {credits} - finished {spent}"
            ));
        }
    }
    (summary, problems)
}

/// Where the pipeline stands, for failure messages: orders by status, outbox
/// rows unpublished, inbox rows, ledger rows and dead letters on each side.
pub async fn diagnose(orders: &Pool, payments: &Pool) -> String {
    const ORDERS: &str = "SELECT format('orders: %s not final, %s final; outbox %s/%s unpublished; inbox %s; dead letters %s',
        (SELECT count(*) FROM orders WHERE status IN ('NEW', 'CANCELLING', 'REFUNDING')),
        (SELECT count(*) FROM orders WHERE status IN ('FINISHED', 'CANCELLED', 'REFUNDED')),
        (SELECT count(*) FROM outbox_pending), (SELECT count(*) FROM outbox),
        (SELECT count(*) FROM inbox), (SELECT count(*) FROM dead_letters))";
    const PAYMENTS: &str = "SELECT format('payments: %s ledger rows; outbox %s/%s unpublished; inbox %s; dead letters %s',
        (SELECT count(*) FROM payments),
        (SELECT count(*) FROM outbox_pending), (SELECT count(*) FROM outbox),
        (SELECT count(*) FROM inbox), (SELECT count(*) FROM dead_letters))";
    let mut out = Vec::new();
    for (pool, sql) in [(orders, ORDERS), (payments, PAYMENTS)] {
        let line = match pool.get().await {
            Ok(client) => match client.query_one(sql, &[]).await {
                Ok(row) => row.get::<_, String>(0),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        out.push(line);
    }
    out.join("\n")
}
