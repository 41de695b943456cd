//! What must hold after the chaos, checked from the API and both databases
//! once everything has quiesced.

use super::clients::Seen;
use super::faults::Injected;
use crate::invariant;
use shop_db::Pool;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// One named check and what it found.
#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub problems: Vec<String>,
}

impl Check {
    fn new(name: &'static str, problems: Vec<String>) -> Self {
        Self { name, problems }
    }

    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Every check, in order.
pub async fn run(
    seen: &Seen,
    injected: &Injected,
    orders: &Pool,
    payments: &Pool,
    gateway: &str,
    topics: (&str, &str),
) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push(Check::new(
        "zero 500 answers",
        match seen.internal_errors() {
            0 => vec![],
            n => vec![format!("{n} answers were 500")],
        },
    ));
    checks.push(Check::new(
        "every write got a definite answer",
        match seen.unresolved {
            0 => vec![],
            n => vec![format!("{n} writes never got one")],
        },
    ));
    let pending = invariant::pending_orders(orders).await;
    checks.push(Check::new(
        "no order left NEW",
        if pending == 0 {
            vec![]
        } else {
            vec![format!("{pending} orders are NEW")]
        },
    ));
    let (_, problems) = invariant::check(orders, payments).await;
    checks.push(Check::new(
        "one ledger row per order, matching its status; money conserved per user",
        problems,
    ));
    checks.push(Check::new(
        "every acknowledged order is stored as acknowledged",
        acknowledged_orders(seen, orders).await,
    ));
    checks.push(Check::new(
        "every acknowledged top-up is credited once",
        acknowledged_top_ups(seen, payments).await,
    ));
    checks.push(Check::new(
        "every accepted cancel ended CANCELLED, every refused one is a paid order",
        cancels_won(seen, orders).await,
    ));
    checks.push(Check::new(
        "every accepted refund ended REFUNDED, credited once",
        refunds_credited_once(seen, orders, payments).await,
    ));
    checks.push(Check::new(
        "each Idempotency-Key answered with one order",
        one_order_per_key(seen, orders).await,
    ));
    checks.push(Check::new(
        "dead letters are exactly the poison",
        dead_letters_are_the_poison(injected, orders, payments, topics).await,
    ));
    checks.push(Check::new(
        "the API reports the balances the database holds",
        balances_through_the_api(seen, payments, gateway).await,
    ));
    checks
}

async fn acknowledged_orders(seen: &Seen, orders: &Pool) -> Vec<String> {
    let Ok(client) = orders.get().await else {
        return vec!["no orders database".to_owned()];
    };
    let stored: HashMap<Uuid, (Uuid, i64)> = match client
        .query("SELECT id, user_id, amount FROM orders", &[])
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect(),
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    for (key, (user, amount, id)) in &seen.orders {
        let expected = (Uuid::parse_str(user).unwrap_or_default(), *amount);
        match Uuid::parse_str(id).ok().and_then(|id| stored.get(&id)) {
            Some(found) if *found == expected => {}
            Some(found) => problems.push(format!("order {id} (key {key}) stored as {found:?}")),
            None => problems.push(format!("acknowledged order {id} (key {key}) is missing")),
        }
    }
    problems
}

/// Every order's (status, cancel_reason).
async fn statuses(orders: &Pool) -> Result<HashMap<String, (String, Option<String>)>, String> {
    let client = orders.get().await.map_err(|e| e.to_string())?;
    let rows = client
        .query("SELECT id::text, status, cancel_reason FROM orders", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// A 202 cancel ends CANCELLED by the customer; a 200 found it CANCELLED
/// already (for any reason); a 409 found it paid (FINISHED, or refunded).
async fn cancels_won(seen: &Seen, orders: &Pool) -> Vec<String> {
    let statuses = match statuses(orders).await {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    for (id, answer) in &seen.cancels {
        let found = statuses.get(id).map(|(s, r)| (s.as_str(), r.as_deref()));
        let fine = matches!(
            (answer, found),
            (202, Some(("CANCELLED", Some("CANCELLED_BY_USER"))))
                | (200, Some(("CANCELLED", Some(_))))
                | (409, Some(("FINISHED" | "REFUNDING" | "REFUNDED", None)))
        );
        if !fine {
            problems.push(format!(
                "cancel of {id} answered {answer}, order is {found:?}"
            ));
        }
    }
    problems
}

/// A 2xx refund ends REFUNDED with exactly one REFUND row in the ledger; an
/// order whose refunds were all refused (409: not FINISHED at the time) was
/// never refunded (only its own shopper refunds it).
async fn refunds_credited_once(seen: &Seen, orders: &Pool, payments: &Pool) -> Vec<String> {
    let statuses = match statuses(orders).await {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    let refunds: HashMap<String, (String, i64)> = match payments.get().await {
        Ok(client) => match client
            .query(
                "SELECT order_id::text, kind, count(*) OVER (PARTITION BY order_id) FROM refunds",
                &[],
            )
            .await
        {
            Ok(rows) => rows
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2))))
                .collect(),
            Err(e) => return vec![e.to_string()],
        },
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    for (id, answer) in &seen.refunds {
        let status = statuses.get(id).map(|(s, _)| s.as_str());
        let refund = refunds.get(id).map(|(k, n)| (k.as_str(), *n));
        let fine = match answer {
            200..=299 => status == Some("REFUNDED") && refund == Some(("REFUND", 1)),
            409 => status != Some("REFUNDED") && refund.is_none_or(|(kind, _)| kind != "REFUND"),
            _ => false,
        };
        if !fine {
            problems.push(format!(
                "refund of {id} answered {answer}: order {status:?}, ledger refund {refund:?}"
            ));
        }
    }
    problems
}

async fn acknowledged_top_ups(seen: &Seen, payments: &Pool) -> Vec<String> {
    let Ok(client) = payments.get().await else {
        return vec!["no payments database".to_owned()];
    };
    let stored: HashMap<String, (Uuid, i64, i64)> = match client
        .query(
            "SELECT idempotency_key, min(user_id::text)::uuid, sum(amount)::bigint, count(*)
             FROM credits WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key",
            &[],
        )
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect(),
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    for (key, (user, amount)) in &seen.top_ups {
        match stored.get(key) {
            Some((u, a, 1)) if u.to_string() == *user && a == amount => {}
            Some(found) => problems.push(format!("top-up {key} stored as {found:?}")),
            None => problems.push(format!("acknowledged top-up {key} is missing")),
        }
    }
    problems
}

async fn one_order_per_key(seen: &Seen, orders: &Pool) -> Vec<String> {
    let mut problems: Vec<String> = seen
        .conflicting_keys
        .iter()
        .map(|k| format!("key {k} was answered with two orders"))
        .collect();
    let Ok(client) = orders.get().await else {
        return vec!["no orders database".to_owned()];
    };
    match client
        .query(
            "SELECT user_id, idempotency_key, count(*) FROM orders
             WHERE idempotency_key IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1",
            &[],
        )
        .await
    {
        Ok(rows) => problems.extend(rows.iter().map(|r| {
            format!(
                "key {} has {} orders",
                r.get::<_, String>(1),
                r.get::<_, i64>(2)
            )
        })),
        Err(e) => problems.push(e.to_string()),
    }
    problems
}

async fn dead_letters_are_the_poison(
    injected: &Injected,
    orders: &Pool,
    payments: &Pool,
    (requests, results): (&str, &str),
) -> Vec<String> {
    let mut problems = Vec::new();
    for (pool, topic) in [(payments, requests), (orders, results)] {
        let expected = injected.poison.get(topic).copied().unwrap_or(0);
        let found: i64 = match pool.get().await {
            Ok(client) => client
                .query_one(
                    "SELECT count(DISTINCT (partition, \"offset\")) FROM dead_letters WHERE topic = $1",
                    &[&topic],
                )
                .await
                .map_or(-1, |r| r.get(0)),
            Err(_) => -1,
        };
        if found != expected {
            problems.push(format!(
                "{topic}: {found} dead letters for {expected} poison messages"
            ));
        }
    }
    problems
}

async fn balances_through_the_api(seen: &Seen, payments: &Pool, gateway: &str) -> Vec<String> {
    let users: HashSet<&String> = seen
        .orders
        .values()
        .map(|(u, _, _)| u)
        .chain(seen.top_ups.values().map(|(u, _)| u))
        .collect();
    let Ok(client) = payments.get().await else {
        return vec!["no payments database".to_owned()];
    };
    let http = reqwest::Client::new();
    let mut problems = Vec::new();
    for user in users {
        let Ok(id) = Uuid::parse_str(user) else {
            continue;
        };
        let stored: Option<i64> = client
            .query_opt("SELECT balance FROM accounts WHERE user_id = $1", &[&id])
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0));
        let token = crate::Stack::dev_token(gateway, user).await;
        let through_api = match http
            .get(format!("{gateway}/api/v1/accounts/{user}"))
            .bearer_auth(&token)
            .send()
            .await
        {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["balance"].as_i64()),
            Err(_) => None,
        };
        if stored.is_none() || stored != through_api {
            problems.push(format!(
                "user {user}: database {stored:?}, API {through_api:?}"
            ));
        }
    }
    problems
}
