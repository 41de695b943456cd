//! Shoppers driving the REST API through the faults: orders and top-ups
//! under Idempotency-Keys, cancels and refunds of their own orders, each
//! retried with the same key until a definite answer (2xx or 4xx); one
//! request in ten has a very short timeout, so its answer is lost and the
//! retry must return the original result.

use super::Rng;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What one client saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Acknowledged orders: key → (user, amount, order id).
    pub orders: HashMap<String, (String, i64, String)>,
    /// Acknowledged top-ups: key → (user, amount).
    pub top_ups: HashMap<String, (String, i64)>,
    /// Cancels answered: order id → the last definite HTTP status.
    pub cancels: HashMap<String, u16>,
    /// Refunds answered: order id → the last definite HTTP status.
    pub refunds: HashMap<String, u16>,
    /// Keys that were answered with two different orders.
    pub conflicting_keys: Vec<String>,
    /// Writes retried (after a 5xx, a lost answer or a transport error).
    pub retries: u64,
    /// Answers thrown away on purpose.
    pub lost_answers: u64,
    /// Every HTTP status seen (with the problem's code for errors).
    pub statuses: BTreeMap<String, u64>,
    /// Transport errors (gateway down, timeouts).
    pub transport_errors: u64,
    /// Writes that never got a definite answer before the run ended.
    pub unresolved: u64,
}

impl Seen {
    pub fn merge(&mut self, other: Seen) {
        self.orders.extend(other.orders);
        self.top_ups.extend(other.top_ups);
        for (id, status) in other.cancels {
            merge_answer(&mut self.cancels, id, status);
        }
        for (id, status) in other.refunds {
            merge_answer(&mut self.refunds, id, status);
        }
        self.conflicting_keys.extend(other.conflicting_keys);
        self.retries += other.retries;
        self.lost_answers += other.lost_answers;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.unresolved += other.unresolved;
    }

    /// How many answers were 500.
    pub fn internal_errors(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| status.starts_with("500"))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Keeps an acceptance (2xx) over a refusal: a cancel once accepted stays
/// accepted, whatever a later call of the same client was told.
fn merge_answer(answers: &mut HashMap<String, u16>, id: String, status: u16) {
    let entry = answers.entry(id).or_insert(status);
    if !(200..300).contains(entry) {
        *entry = status;
    }
}

enum Answer {
    Definite(u16, Value),
    Retry,
}

/// One shopper with its own users; runs until `stop`, then finishes the
/// write in flight. It waits `pace` after each request (zero: as fast as
/// answers come).
pub async fn shop(
    base: String,
    users: Vec<String>,
    seed: u64,
    stop: Arc<AtomicBool>,
    pace: Duration,
) -> Seen {
    let http = reqwest::Client::new();
    let mut rng = Rng::new(seed);
    let mut seen = Seen::default();
    let mut tokens = HashMap::new();
    for user in &users {
        tokens.insert(user.clone(), crate::Stack::dev_token(&base, user).await);
    }
    // This shopper's acknowledged orders: (user, order id).
    let mut mine: Vec<(String, String)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        let user = users[rng.between(0, users.len() as u64 - 1) as usize].clone();
        let token = tokens.get(&user).cloned().unwrap_or_default();
        let key = uuid::Uuid::new_v4().to_string();
        match rng.between(0, 19) {
            0..=11 => {
                let amount = rng.between(1, 3_000) as i64;
                let body = json!({"user_id": user, "amount": amount, "description": "chaos"});
                if let Some((200..=299, v)) = write(
                    &http,
                    &token,
                    &format!("{base}/api/v1/orders"),
                    &key,
                    &body,
                    &mut rng,
                    &mut seen,
                )
                .await
                {
                    let id = v["order_id"].as_str().unwrap_or_default().to_owned();
                    mine.push((user.clone(), id.clone()));
                    seen.orders.insert(key, (user, amount, id));
                }
            }
            12 | 13 if !mine.is_empty() => {
                // Cancel or refund one of the last few orders (the newest
                // are the likeliest to race their payment).
                let recent = mine.len().saturating_sub(5);
                let (owner, id) =
                    mine[rng.between(recent as u64, mine.len() as u64 - 1) as usize].clone();
                let token = tokens.get(&owner).cloned().unwrap_or_default();
                let action = if rng.chance(60) { "cancel" } else { "refund" };
                let url = format!("{base}/api/v1/orders/{id}/{action}");
                if let Some((status, _)) =
                    write(&http, &token, &url, &key, &Value::Null, &mut rng, &mut seen).await
                {
                    let answers = if action == "cancel" {
                        &mut seen.cancels
                    } else {
                        &mut seen.refunds
                    };
                    merge_answer(answers, id, status);
                }
            }
            12..=16 => {
                let amount = rng.between(1, 5_000) as i64;
                let url = format!("{base}/api/v1/accounts/{user}/top-up");
                if let Some((200..=299, _)) = write(
                    &http,
                    &token,
                    &url,
                    &key,
                    &json!({"amount": amount}),
                    &mut rng,
                    &mut seen,
                )
                .await
                {
                    seen.top_ups.insert(key, (user, amount));
                }
            }
            _ => {
                let status = match http
                    .get(format!("{base}/api/v1/accounts/{user}"))
                    .bearer_auth(&token)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                {
                    Ok(r) => label(r.status().as_u16(), &r.json().await.unwrap_or(Value::Null)),
                    Err(_) => {
                        seen.transport_errors += 1;
                        continue;
                    }
                };
                *seen.statuses.entry(status).or_default() += 1;
            }
        }
    }
    seen
}

/// POSTs `body` under `key` until a definite answer (or three minutes).
/// An order key answered twice must name the same order.
async fn write(
    http: &reqwest::Client,
    token: &str,
    url: &str,
    key: &str,
    body: &Value,
    rng: &mut Rng,
    seen: &mut Seen,
) -> Option<(u16, Value)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut first_order: Option<String> = None;
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0;
    while tokio::time::Instant::now() < deadline {
        attempt += 1;
        if attempt > 1 {
            seen.retries += 1;
        }
        let lose = rng.chance(10);
        let timeout = if lose {
            Duration::from_millis(rng.between(1, 30))
        } else {
            Duration::from_secs(15)
        };
        let answer = match http
            .post(url)
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .timeout(timeout)
            .send()
            .await
        {
            Ok(response) => {
                let status = response.status().as_u16();
                let Ok(value) = response.json::<Value>().await else {
                    // The answer was cut off (a lost answer): ask again.
                    if lose {
                        seen.lost_answers += 1;
                    } else {
                        seen.transport_errors += 1;
                    }
                    tokio::time::sleep(delay).await;
                    continue;
                };
                *seen.statuses.entry(label(status, &value)).or_default() += 1;
                if let Some(id) = value["order_id"].as_str() {
                    match &first_order {
                        Some(first) if first != id => seen.conflicting_keys.push(key.to_owned()),
                        Some(_) => {}
                        None => first_order = Some(id.to_owned()),
                    }
                }
                if (500..=599).contains(&status) {
                    Answer::Retry
                } else {
                    Answer::Definite(status, value)
                }
            }
            Err(e) => {
                if lose && e.is_timeout() {
                    seen.lost_answers += 1;
                } else {
                    seen.transport_errors += 1;
                }
                Answer::Retry
            }
        };
        match answer {
            Answer::Definite(status, value) => return Some((status, value)),
            Answer::Retry => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
    seen.unresolved += 1;
    None
}

fn label(status: u16, body: &Value) -> String {
    match body["code"].as_str() {
        Some(code) if status >= 400 => format!("{status} {code}"),
        _ => status.to_string(),
    }
}
