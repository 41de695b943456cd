//! `chaos [--faults N] [--seed S] [--clients C] [--replicas R]`: see
//! `shop_e2e::chaos`. Prints a table of what happened and `N passed, M
//! failed`; exits non-zero when a check failed. `make chaos` runs 100
//! faults, `make test` 30 on one replica and 20 on two.
//!
//! With `--replicas R` (R ≥ 2) every service runs R replicas in consumer
//! groups on librdkafka's mock cluster, with one more slot that joins and
//! leaves. Before the random faults, a scripted phase (two rounds of a join,
//! a leave and a kill -9 + restart of each service, then a rolling restart of every
//! replica) measures the stall per membership event and the settle times
//! (see `shop_e2e::churn`); the figures are printed after the checks.

use shop_e2e::chaos::{Rng, checks, clients, faults};
use shop_e2e::churn;
use shop_e2e::{Service, Stack, StackOptions};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> ExitCode {
    let mut faults_wanted = 100;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    let mut shoppers = 6;
    let mut replicas = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--faults", Some(v)) => faults_wanted = v,
            ("--seed", Some(v)) => seed = v,
            ("--clients", Some(v)) => shoppers = v,
            ("--replicas", Some(v @ 1..=8)) => replicas = v as usize,
            _ => {
                eprintln!("usage: chaos [--faults N] [--seed S] [--clients C] [--replicas 1..8]");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "chaos: {faults_wanted} faults, {shoppers} clients, {replicas} replica(s) per service, seed {seed} (--seed {seed} repeats the faults)"
    );
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut stack = if replicas > 1 {
        // One slot more than runs: it joins and leaves.
        let mut stack = Stack::start_with(StackOptions::group(replicas + 1)).await;
        for service in Service::BOTH {
            for slot in 1..replicas {
                stack.replica(service, slot).start().await;
            }
        }
        stack
    } else {
        Stack::start_with_gateway().await
    };
    let gateway = stack.gateway_url();

    let stop = Arc::new(AtomicBool::new(false));
    let mut shopping = tokio::task::JoinSet::new();
    for c in 0..shoppers {
        let users: Vec<String> = (0..2).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        for user in &users {
            stack.open_account(user, 10_000).await;
        }
        let seed = rng.next_u64() ^ c;
        shopping.spawn(clients::shop(
            gateway.clone(),
            users,
            seed,
            Arc::clone(&stop),
            Duration::ZERO,
        ));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut membership = Vec::new();
    let mut rolling = (0.0, 0.0);
    if replicas > 1 {
        membership = churn::membership_events(&mut stack, 2, churn::GAP).await;
        rolling = churn::rolling_restart(&mut stack, churn::READY_PAUSE).await;
        tokio::time::sleep(churn::GAP).await;
    }
    let injected = faults::inject(&mut stack, &mut rng, faults_wanted).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = clients::Seen::default();
    while let Some(done) = shopping.join_next().await {
        match done {
            Ok(s) => seen.merge(s),
            Err(e) => eprintln!("a client failed: {e}"),
        }
    }

    // Quiesce: every order settles.
    let (orders, payments) = stack.pools().await;
    let deadline = Instant::now() + Duration::from_secs(240);
    while shop_e2e::invariant::pending_orders(&orders).await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kafka = stack.kafka();
    let results = checks::run(
        &seen,
        &injected,
        &orders,
        &payments,
        &gateway,
        (&kafka.topics.requests, &kafka.topics.results),
    )
    .await;

    println!("\n| what | count |\n|---|---|");
    for (kind, n) in &injected.by_kind {
        println!("| fault: {kind} | {n} |");
    }
    println!("| orders acknowledged | {} |", seen.orders.len());
    println!("| top-ups acknowledged | {} |", seen.top_ups.len());
    let accepted = |answers: &std::collections::HashMap<String, u16>| {
        answers.values().filter(|s| (200..300).contains(*s)).count()
    };
    println!(
        "| cancels answered / accepted | {} / {} |",
        seen.cancels.len(),
        accepted(&seen.cancels)
    );
    println!(
        "| refunds answered / accepted | {} / {} |",
        seen.refunds.len(),
        accepted(&seen.refunds)
    );
    println!("| retries with the same key | {} |", seen.retries);
    println!("| answers lost on purpose | {} |", seen.lost_answers);
    println!("| transport errors | {} |", seen.transport_errors);
    for (status, n) in &seen.statuses {
        println!("| answers {status} | {n} |");
    }
    let summary = shop_e2e::invariant::check(&orders, &payments).await.0;
    println!(
        "| orders FINISHED / CANCELLED (of them by the customer or expired) / REFUNDED | {} / {} ({}) / {} |",
        summary.finished, summary.cancelled, summary.taken_back, summary.refunded
    );
    println!("| run time | {:.0} s |", started.elapsed().as_secs_f64());
    println!();
    for check in &results {
        let mark = if check.passed() { "ok" } else { "FAILED" };
        println!("{mark:>6}  {}", check.name);
        for problem in check.problems.iter().take(10) {
            println!("        {problem}");
        }
    }
    if replicas > 1 {
        match churn::measure_stalls(&stack, &mut membership, churn::GAP).await {
            Ok(()) => {
                let settled = churn::settle_times(&orders, rolling.0, rolling.1)
                    .await
                    .unwrap_or_default();
                println!("\n{}", churn::report(&membership, &settled));
            }
            Err(e) => println!("\n(churn figures not measured: {e})"),
        }
    }
    let failed = results.iter().filter(|c| !c.passed()).count();
    println!(
        "\nchaos: {} passed, {failed} failed",
        results.len() - failed
    );
    if failed > 0 {
        eprintln!("{}", stack.logs());
        eprintln!(
            "{}",
            shop_e2e::invariant::diagnose(&orders, &payments).await
        );
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
