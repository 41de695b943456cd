//! Traces, end to end: the three real binaries export their spans over
//! OTLP/gRPC (the real exporter) to a receiver this test serves on a free
//! port, and one order placed through the gateway is one connected trace
//! across the gateway, orders and payments. A collector that never answers
//! slows no request; its lost spans are counted.

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use rdkafka::Message as _;
use rdkafka::message::Headers as _;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_e2e::otlp::{Received, Receiver};
use shop_e2e::{Stack, StackOptions};
use shop_testkit::eventually;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// Every process exports to `endpoint`, in batches every 100 ms.
fn traced_stack(endpoint: &str, more: &[(&str, &str)]) -> StackOptions {
    let mut common_env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            endpoint.to_owned(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
    ];
    common_env.extend(more.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    StackOptions {
        gateway: true,
        common_env,
        ..StackOptions::default()
    }
}

/// Posts `body` to the gateway as `user`'s token holder.
async fn post(stack: &Stack, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let response = Client::new()
        .post(format!("{}{path}", stack.gateway_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("gateway answers");
    let status = response.status();
    (status, response.json().await.expect("json body"))
}

/// A funded account for a new user; returns the user id and token.
async fn funded_user(stack: &Stack) -> (String, String) {
    let user = uuid::Uuid::new_v4().to_string();
    let token = stack.token(&user).await;
    let (status, body) = post(stack, &token, "/api/v1/accounts", json!({"user_id": user})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let top_up = format!("/api/v1/accounts/{user}/top-up");
    let (status, body) = post(stack, &token, &top_up, json!({"amount": 10_000})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (user, token)
}

async fn place_order(stack: &Stack, user: &str, token: &str) -> String {
    let order = json!({"user_id": user, "amount": 100, "description": "traced"});
    let (status, body) = post(stack, token, "/api/v1/orders", order).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["order_id"].as_str().expect("order_id").to_owned()
}

#[tokio::test]
async fn one_order_through_the_gateway_is_one_connected_trace() {
    let (receiver, endpoint) = Receiver::start().await;
    let stack = Stack::start_with(traced_stack(&endpoint, &[])).await;
    let (user, token) = funded_user(&stack).await;
    let order_id = place_order(&stack, &user, &token).await;
    let kafka = stack.kafka();
    let (requests, results) = (kafka.topics.requests.clone(), kafka.topics.results.clone());

    // The order's trace: every span sharing the create transaction's trace
    // id, complete once the result's processing in orders has arrived.
    let expected = [
        (
            "gateway",
            SpanKind::Server,
            "POST /api/v1/orders".to_owned(),
        ),
        (
            "gateway",
            SpanKind::Client,
            "shop.orders.v1.Orders/CreateOrder".to_owned(),
        ),
        (
            "orders",
            SpanKind::Server,
            "shop.orders.v1.Orders/CreateOrder".to_owned(),
        ),
        (
            "orders",
            SpanKind::Internal,
            "create order transaction".to_owned(),
        ),
        ("orders", SpanKind::Producer, format!("{requests} publish")),
        ("payments", SpanKind::Consumer, format!("{requests} apply")),
        ("payments", SpanKind::Producer, format!("{results} publish")),
        ("orders", SpanKind::Consumer, format!("{results} apply")),
    ];
    let trace = eventually("the order's whole trace", WAIT, || {
        let spans = receiver.spans();
        let order_id = order_id.clone();
        let expected = &expected;
        async move {
            let created = spans.iter().find(|s| {
                s.name == "create order transaction"
                    && s.attributes.get("order_id") == Some(&order_id)
            })?;
            let trace: Vec<Received> = spans
                .iter()
                .filter(|s| s.trace_id == created.trace_id)
                .cloned()
                .collect();
            let complete = expected
                .iter()
                .all(|(service, kind, name)| trace.iter().any(|s| s.is(service, *kind, name)));
            // The batches' spans end after their messages' apply spans, and
            // may come in a later export.
            let batches_in = trace
                .iter()
                .filter(|s| s.kind == SpanKind::Consumer as i32 && s.name.ends_with(" apply"))
                .flat_map(|s| &s.links)
                .all(|(trace_id, span_id)| {
                    spans
                        .iter()
                        .any(|s| &s.trace_id == trace_id && &s.span_id == span_id)
                });
            (complete && batches_in).then_some(trace)
        }
    })
    .await;

    // Connected: one root, the gateway's HTTP span; every other span's
    // parent is a span of the same trace.
    let ids: HashSet<&Vec<u8>> = trace.iter().map(|s| &s.span_id).collect();
    let roots: Vec<&Received> = trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    assert!(roots[0].is("gateway", SpanKind::Server, "POST /api/v1/orders"));
    for span in &trace {
        assert!(
            span.parent_span_id.is_empty() || ids.contains(&span.parent_span_id),
            "{} ({}) has a parent outside the trace",
            span.name,
            span.service
        );
    }
    // Parentage as designed: each hop descends from the one before (the
    // handlers' own spans may stand between).
    let find = |service: &str, kind: SpanKind, name: &str| {
        trace
            .iter()
            .find(|s| s.is(service, kind, name))
            .unwrap_or_else(|| panic!("{service} {name}"))
    };
    let parent_of: HashMap<&Vec<u8>, &Vec<u8>> = trace
        .iter()
        .map(|s| (&s.span_id, &s.parent_span_id))
        .collect();
    let descends = |span: &Received, ancestor: &Received| {
        let mut at = span.parent_span_id.clone();
        while !at.is_empty() {
            if at == ancestor.span_id {
                return true;
            }
            at = parent_of.get(&at).map(|p| (*p).clone()).unwrap_or_default();
        }
        false
    };
    let chain = expected
        .iter()
        .map(|(service, kind, name)| find(service, *kind, name))
        .collect::<Vec<_>>();
    for pair in chain.windows(2) {
        assert!(
            descends(pair[1], pair[0]),
            "{} ({}) descends from {} ({})",
            pair[1].name,
            pair[1].service,
            pair[0].name,
            pair[0].service
        );
    }
    // The publish spans are direct children of the work that wrote the row.
    assert_eq!(
        chain[4].parent_span_id, chain[3].span_id,
        "publish under the transaction"
    );
    // The order id is on the work done for it; no user data is.
    for (service, kind, name) in &expected[3..] {
        if *kind != SpanKind::Producer {
            let span = find(service, *kind, name);
            assert_eq!(span.attributes.get("order_id"), Some(&order_id), "{name}");
        }
    }
    assert!(
        trace
            .iter()
            .all(|s| s.attributes.values().all(|v| v != "traced")),
        "the order's description is not on a span"
    );
    // Each apply span is linked to its batch's CONSUMER span, which is
    // linked back to the message's publish.
    let all = receiver.spans();
    for (apply, publish, topic) in [(5, 4, &requests), (7, 6, &results)] {
        let (batch_trace, batch_span) = chain[apply].links.first().cloned().expect("a link");
        let batch = all
            .iter()
            .find(|s| s.trace_id == batch_trace && s.span_id == batch_span)
            .expect("the batch span was exported");
        assert_eq!(batch.name, format!("{topic} process"));
        assert_eq!(batch.kind, SpanKind::Consumer as i32);
        assert!(
            batch.links.contains(&(
                chain[publish].trace_id.clone(),
                chain[publish].span_id.clone()
            )),
            "the batch links to the message's publish"
        );
    }

    // Every published message carries exactly one traceparent.
    for topic in [&requests, &results] {
        let count = usize::try_from(shop_testkit::topic_size(&kafka, topic)).expect("size");
        for message in shop_testkit::read_topic(&kafka, topic, count, WAIT).await {
            let traceparents = message.headers().map_or(0, |headers| {
                headers
                    .iter()
                    .filter(|h| h.key == shop_db::headers::TRACEPARENT)
                    .count()
            });
            assert_eq!(traceparents, 1, "one traceparent per message on {topic}");
        }
    }
}

#[tokio::test]
async fn a_collector_that_never_answers_slows_no_request() {
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port");
    let endpoint = format!("http://{}", silent.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let stack = Stack::start_with(traced_stack(
        &endpoint,
        &[("OTEL_EXPORTER_OTLP_TIMEOUT", "10000")],
    ))
    .await;
    let (user, token) = funded_user(&stack).await;
    let mut slowest = Duration::ZERO;
    let mut ids = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        ids.push(place_order(&stack, &user, &token).await);
        slowest = slowest.max(started.elapsed());
    }
    // An export waits 10 s for the collector; a request that waited for one
    // would show.
    assert!(
        slowest < Duration::from_secs(3),
        "an order took {slowest:?} to be accepted"
    );
    let http = Client::new();
    for id in &ids {
        let url = format!("{}/api/v1/orders/{id}", stack.gateway_url());
        eventually("the order to settle", WAIT, || {
            let request = http.get(&url).bearer_auth(&token).send();
            async move {
                let order: Value = request.await.ok()?.json().await.ok()?;
                (order["status"] != "NEW").then_some(())
            }
        })
        .await;
    }
    // The spans the collector did not take are counted.
    let orders_metrics = stack.metrics.0;
    eventually("lost spans to be counted", WAIT, || async move {
        Stack::scrape(orders_metrics)
            .await
            .lines()
            .find(|l| l.starts_with("shop_trace_spans_dropped_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|n| *n > 0.0)
    })
    .await;
    held.abort();
}
