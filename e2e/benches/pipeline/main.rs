//! `make bench`: end-to-end figures on release builds of the real binaries.
//!
//! 1. PostgreSQL's commit limit on this machine (pgbench), the baseline,
//!    with PostgreSQL's CPU per pgbench commit;
//! 2. a rate ladder, open loop, over gRPC (`CreateOrder`) and through the
//!    gateway's REST API: the highest rate that is sustained (no errors, no
//!    backlog left after the step, p99 create → final bounded), each step
//!    on a fresh stack (see [`Bench`]), refined between the last sustained
//!    step and the first that was not;
//! 3. fixed 250 and 500 orders/s in both modes: latency percentiles,
//!    errors, CPU per order of every process;
//! 4. the same gRPC ladder again with 1,000,000 old orders, outbox and inbox
//!    rows in both databases (indexes must keep throughput level);
//! 5. the gateway ladder and 250/s again with traces on (every span of
//!    every process exported over OTLP/gRPC to a receiver in this process);
//! 6. a summary, one `key=value` per line.
//!
//! Figures are printed, nothing is asserted. `STEP_SECONDS` (default 8)
//! sets each step's length, `SCALE_ROWS` (default 1000000) the history.

mod baseline;
mod openloop;
mod resources;
mod statements;

use futures::StreamExt;
use openloop::{Step, Target, Users, run_step};
use resources::{Resources, Who};
use shop_e2e::Stack;
use std::collections::BTreeMap;
use std::time::Duration;

const RATES: &[f64] = &[
    250.0, 500.0, 1_000.0, 1_250.0, 1_500.0, 1_750.0, 2_000.0, 2_500.0, 3_000.0, 4_000.0,
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let step = Duration::from_secs(env_or("STEP_SECONDS", 8));
    let scale_rows: u64 = env_or("SCALE_ROWS", 1_000_000);
    let mut summary: BTreeMap<String, String> = BTreeMap::new();
    let mut peaks: BTreeMap<&'static str, f64> = BTreeMap::new();
    let machine = machine();
    println!("machine: {machine}");
    summary.insert("machine".into(), machine);

    let base = baseline::pg_commit_limit(32, 10).await.unwrap_or_default();
    let pg_limit = base.tps;
    println!(
        "PostgreSQL commit limit (pgbench, one-row INSERT, 32 clients): {pg_limit:.0}/s, PostgreSQL CPU {:.3} ms per commit",
        base.pg_cpu_ms_per_commit
    );

    println!(
        "\nrate ladder over gRPC ({} s per step, a fresh stack each)",
        step.as_secs()
    );
    let grpc_max = ladder(Mode::Grpc, RATES, step, 0, None, &mut peaks).await;
    println!(
        "\nrate ladder through the gateway ({} s per step, a fresh stack each)",
        step.as_secs()
    );
    let gateway_max = ladder(Mode::Gateway, RATES, step, 0, None, &mut peaks).await;

    println!("\nfixed 250 orders/s ({} s)", (step * 2).as_secs());
    let at_250 = fixed_rate(Mode::Grpc, 250.0, step * 2, None, &mut peaks).await;
    let gateway_at_250 = fixed_rate(Mode::Gateway, 250.0, step * 2, None, &mut peaks).await;
    println!("\nfixed 500 orders/s ({} s)", (step * 2).as_secs());
    let at_500 = fixed_rate(Mode::Grpc, 500.0, step * 2, None, &mut peaks).await;
    let gateway_at_500 = fixed_rate(Mode::Gateway, 500.0, step * 2, None, &mut peaks).await;

    println!(
        "\nscale check: the gRPC ladder with {scale_rows} old orders, outbox, inbox and ledger rows"
    );
    // Finer steps around the empty database's maximum: 70 % to 120 % of it.
    let around: Vec<f64> = (7..=12)
        .map(|tenth| grpc_max * f64::from(tenth) / 10.0)
        .collect();
    let scaled_max = ladder(Mode::Grpc, &around, step, scale_rows, None, &mut peaks).await;

    // Tracing's cost: the gateway ladder and 250/s again, every process
    // exporting every span (100 % sampling) to a receiver in this process.
    let (receiver, otlp) = shop_e2e::otlp::Receiver::start_counting().await;
    println!("\nwith traces on (100 % sampling, OTLP/gRPC to a local receiver)");
    let traced_max = ladder(Mode::Gateway, RATES, step, 0, Some(&otlp), &mut peaks).await;
    let traced_at_250 = fixed_rate(Mode::Gateway, 250.0, step * 2, Some(&otlp), &mut peaks).await;
    println!("  spans received: {}", receiver.count());

    summary.insert("pg_commit_limit_per_s".into(), format!("{pg_limit:.0}"));
    summary.insert(
        "grpc_max_sustained_orders_per_s".into(),
        format!("{grpc_max:.0}"),
    );
    summary.insert(
        "gateway_max_sustained_orders_per_s".into(),
        format!("{gateway_max:.0}"),
    );
    if pg_limit > 0.0 {
        summary.insert(
            "ratio_to_pg_limit".into(),
            format!("{:.3}", grpc_max / pg_limit),
        );
    }
    record(&mut summary, "", "500", &at_500);
    record(&mut summary, "gateway_", "500", &gateway_at_500);
    record(&mut summary, "", "250", &at_250);
    record(&mut summary, "gateway_", "250", &gateway_at_250);
    // The cost figures of the cost issue: the three services together, and
    // PostgreSQL as a multiple of one pgbench commit, at 250/s through the
    // gateway.
    let per_order = |m: &Measured, name: &str| {
        m.cpu_seconds.get(name).copied().unwrap_or(0.0) * 1e3 / m.step.orders.max(1) as f64
    };
    let services = |m: &Measured| -> f64 {
        ["gateway", "orders", "payments"]
            .iter()
            .map(|n| per_order(m, n))
            .sum()
    };
    summary.insert(
        "services_cpu_ms_per_order_at_250".into(),
        format!("{:.3}", services(&gateway_at_250)),
    );
    summary.insert(
        "pg_cpu_ms_per_pgbench_commit".into(),
        format!("{:.4}", base.pg_cpu_ms_per_commit),
    );
    if base.pg_cpu_ms_per_commit > 0.0 {
        summary.insert(
            "pg_cpu_per_order_vs_pgbench_commit".into(),
            format!(
                "{:.2}",
                per_order(&gateway_at_250, "postgres") / base.pg_cpu_ms_per_commit
            ),
        );
    }
    if let Some(statements) = &gateway_at_250.statements {
        summary.insert(
            "statements_per_order".into(),
            format!("{:.2}", statements.per_order),
        );
    }
    summary.insert(
        "traced_gateway_max_sustained_orders_per_s".into(),
        format!("{traced_max:.0}"),
    );
    if gateway_max > 0.0 {
        summary.insert(
            "traced_vs_untraced_gateway_max".into(),
            format!("{:.2}", traced_max / gateway_max),
        );
    }
    record(&mut summary, "traced_gateway_", "250", &traced_at_250);
    summary.insert(
        "traced_services_cpu_ms_per_order_at_250".into(),
        format!("{:.3}", services(&traced_at_250)),
    );
    for (name, mb) in peaks {
        summary.insert(format!("peak_rss_mb_{name}"), format!("{mb:.0}"));
    }
    summary.insert("scale_rows".into(), scale_rows.to_string());
    summary.insert(
        "scale_grpc_max_sustained_orders_per_s".into(),
        format!("{scaled_max:.0}"),
    );
    if grpc_max > 0.0 {
        summary.insert(
            "scale_ratio".into(),
            format!("{:.2}", scaled_max / grpc_max),
        );
    }

    println!("\nsummary");
    for (key, value) in &summary {
        println!("{key}={value}");
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Grpc,
    Gateway,
}

/// A fresh stack (broker, databases, three services) with funded users and
/// its processes watched. The test broker's fetches slow down as its topics
/// grow (it lists every stored batch of a partition on each fetch), so
/// every step starts on a fresh one; the database keeps `history_rows`.
struct Bench {
    stack: Stack,
    orders_db: shop_db::Pool,
    payments_db: shop_db::Pool,
    users: Users,
    /// Each user's bearer token for the gateway.
    tokens: std::sync::Arc<std::collections::HashMap<String, String>>,
    resources: Resources,
}

impl Bench {
    /// `otlp`: every process exports its spans there (traces on, 100 %
    /// sampling); `None`: traces off.
    async fn start(history_rows: u64, otlp: Option<&str>) -> Self {
        let common_env = otlp
            .map(|endpoint| {
                vec![(
                    "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                    endpoint.to_owned(),
                )]
            })
            .unwrap_or_default();
        let stack = Stack::start_with(shop_e2e::StackOptions {
            gateway: true,
            common_env,
            ..shop_e2e::StackOptions::default()
        })
        .await;
        let (orders_db, payments_db) = stack.pools().await;
        if history_rows > 0 {
            fill_history(&orders_db, &payments_db, history_rows).await;
        }
        let users = open_accounts(&stack, 2_000, 200).await;
        let base = stack.gateway_url();
        let tokens = futures::stream::iter(users.funded.iter().chain(&users.broke))
            .map(|user| {
                let base = base.clone();
                async move { (user.clone(), Stack::dev_token(&base, user).await) }
            })
            .buffer_unordered(32)
            .collect::<std::collections::HashMap<_, _>>()
            .await;
        let pid = |p: Option<u32>| Who::Pid(p.unwrap_or(0));
        let resources = Resources::watch(vec![
            ("gateway", pid(stack.gateway.as_ref().and_then(|g| g.pid()))),
            ("orders", pid(stack.orders.pid())),
            ("payments", pid(stack.payments.pid())),
            ("broker", pid(stack.broker.pid())),
            ("postgres", Who::Command("postgres")),
            ("loadgen", Who::Me),
        ]);
        Self {
            stack,
            orders_db,
            payments_db,
            users,
            tokens: std::sync::Arc::new(tokens),
            resources,
        }
    }

    fn target(&self, mode: Mode) -> Target {
        match mode {
            Mode::Grpc => Target::Grpc {
                orders: Box::new(self.stack.orders_client()),
                payments: Box::new(self.stack.payments_client()),
            },
            Mode::Gateway => Target::Gateway {
                http: reqwest::Client::new(),
                base: self.stack.gateway_url(),
                tokens: std::sync::Arc::clone(&self.tokens),
            },
        }
    }

    async fn run(&self, mode: Mode, rate: f64, duration: Duration) -> Step {
        let target = self.target(mode);
        let dbs = (&self.orders_db, &self.payments_db);
        run_step(
            &target,
            &self.users,
            dbs,
            self.stack.metrics,
            rate,
            duration,
        )
        .await
    }

    /// Records this stack's peak memory into `peaks` and stops it.
    fn finish(self, peaks: &mut BTreeMap<&'static str, f64>) {
        for (name, mb) in self.resources.peak_rss_mb() {
            let peak = peaks.entry(name).or_default();
            *peak = peak.max(mb);
        }
        self.orders_db.close();
        self.payments_db.close();
        drop(self.stack);
    }
}

/// Steps up through `rates`, a fresh stack per step, until one is not
/// sustained; returns the highest sustained rate.
async fn ladder(
    mode: Mode,
    rates: &[f64],
    duration: Duration,
    history_rows: u64,
    otlp: Option<&str>,
    peaks: &mut BTreeMap<&'static str, f64>,
) -> f64 {
    let mut best = 0.0;
    let mut failed = None;
    for &rate in rates {
        if !sustains(mode, rate, duration, history_rows, otlp, peaks).await {
            failed = Some(rate);
            break;
        }
        best = rate;
    }
    // Refine in quarters between the last sustained rate and the first not.
    if let Some(failed) = failed {
        let (base, quarter) = (best, (failed - best) / 4.0);
        for k in 1..4 {
            let rate = (base + quarter * f64::from(k)).round();
            if rate <= best || !sustains(mode, rate, duration, history_rows, otlp, peaks).await {
                break;
            }
            best = rate;
        }
    }
    best
}

/// One ladder step on a fresh stack; prints its line.
async fn sustains(
    mode: Mode,
    rate: f64,
    duration: Duration,
    history_rows: u64,
    otlp: Option<&str>,
    peaks: &mut BTreeMap<&'static str, f64>,
) -> bool {
    let bench = Bench::start(history_rows, otlp).await;
    let step = bench.run(mode, rate, duration).await;
    bench.finish(peaks);
    println!("{}", step.line());
    step.sustained()
}

/// One fixed-rate step with the CPU each process spent on it and, where
/// PostgreSQL counts them, its statements.
struct Measured {
    step: Step,
    cpu_seconds: BTreeMap<&'static str, f64>,
    statements: Option<statements::Statements>,
}

async fn fixed_rate(
    mode: Mode,
    rate: f64,
    duration: Duration,
    otlp: Option<&str>,
    peaks: &mut BTreeMap<&'static str, f64>,
) -> Measured {
    let bench = Bench::start(0, otlp).await;
    let counted = statements::reset(&bench.orders_db).await;
    let before = bench.resources.cpu();
    let step = bench.run(mode, rate, duration).await;
    let cpu_seconds = bench.resources.cpu().since(&before);
    let statements = if counted {
        statements::read(&bench.orders_db, &bench.payments_db, step.orders).await
    } else {
        None
    };
    bench.finish(peaks);
    println!("{}", step.line());
    let per_order: Vec<String> = cpu_seconds
        .iter()
        .map(|(name, s)| format!("{name} {:.2}", s * 1e3 / step.orders.max(1) as f64))
        .collect();
    println!("         CPU ms per order: {}", per_order.join(", "));
    match &statements {
        Some(statements) => statements.print(12),
        None => println!("         statements: not counted (pg_stat_statements is not loaded)"),
    }
    Measured {
        step,
        cpu_seconds,
        statements,
    }
}

fn record(summary: &mut BTreeMap<String, String>, prefix: &str, rate: &str, measured: &Measured) {
    let step = &measured.step;
    let mut put = |key: &str, value: String| {
        summary.insert(format!("{prefix}{key}_at_{rate}"), value);
    };
    put("p50_ms", format!("{:.1}", step.table.p50));
    put("p95_ms", format!("{:.1}", step.table.p95));
    put("p99_ms", format!("{:.1}", step.table.p99));
    put("max_ms", format!("{:.1}", step.table.max));
    put("watched_p50_ms", format!("{:.1}", step.watched.p50));
    put("watched_p99_ms", format!("{:.1}", step.watched.p99));
    put("errors", step.errors.to_string());
    put("server_errors", step.server_errors.to_string());
    put(
        "relay_commit_to_publish_p50_ms",
        format!("{:.1}", step.relay_p50_ms.0),
    );
    put(
        "payments_relay_commit_to_publish_p50_ms",
        format!("{:.1}", step.relay_p50_ms.1),
    );
    let orders = step.orders.max(1) as f64;
    for (name, seconds) in &measured.cpu_seconds {
        put(
            &format!("cpu_ms_per_order_{name}"),
            format!("{:.3}", seconds * 1e3 / orders),
        );
    }
}

/// `funded` users with plenty of money and `broke` users with none.
async fn open_accounts(stack: &Stack, funded: usize, broke: usize) -> Users {
    let new =
        |n: usize| -> Vec<String> { (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect() };
    let users = Users {
        funded: new(funded),
        broke: new(broke),
    };
    let balances = users
        .funded
        .iter()
        .map(|u| (u, 100_000_000_000))
        .chain(users.broke.iter().map(|u| (u, 0)));
    futures::stream::iter(balances)
        .for_each_concurrent(32, |(user, balance)| stack.open_account(user, balance))
        .await;
    users
}

/// Old, settled history in both databases, as after months of trading.
async fn fill_history(orders_db: &shop_db::Pool, payments_db: &shop_db::Pool, rows: u64) {
    let messaging = format!(
        "INSERT INTO outbox (event_id, topic, key, event_type, payload, created_at, published_at, attempts, txid)
           SELECT gen_random_uuid(), 'history', '\\x00'::bytea, 'history', '\\x00'::bytea,
                  now() - interval '1 day', now() - interval '1 day', 1, '0'::xid8
           FROM generate_series(1, {rows});
         INSERT INTO inbox (event_id, topic, partition, \"offset\")
           SELECT gen_random_uuid(), 'history', 0, g FROM generate_series(1, {rows}) AS g;"
    );
    let orders = format!(
        "INSERT INTO orders (id, user_id, amount, description, status, created_at, updated_at)
           SELECT gen_random_uuid(), gen_random_uuid(), 100, 'history', 'FINISHED',
                  now() - interval '1 day', now() - interval '1 day'
           FROM generate_series(1, {rows});
         {messaging}"
    );
    let payments = format!(
        "INSERT INTO payments (order_id, user_id, amount, outcome, request_event_id)
           SELECT gen_random_uuid(), gen_random_uuid(), 100, 'PAID', gen_random_uuid()
           FROM generate_series(1, {rows});
         {messaging}"
    );
    let started = std::time::Instant::now();
    let fill = |pool: &shop_db::Pool, sql: String| {
        let pool = pool.clone();
        async move {
            let client = pool.get().await.expect("database");
            client.batch_execute(&sql).await.expect("history inserted");
            // As after months of trading: vacuumed, analysed, checkpointed.
            for statement in ["VACUUM ANALYZE", "CHECKPOINT"] {
                client.batch_execute(statement).await.expect("vacuumed");
            }
        }
    };
    tokio::join!(fill(orders_db, orders), fill(payments_db, payments));
    println!("  filled in {:.0} s", started.elapsed().as_secs_f64());
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let memory_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cores} cores, {model}, {memory_gb:.0} GiB")
}
