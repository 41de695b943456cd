//! Consumer-group mode, the production path, with real replicas: two or
//! three processes per service on librdkafka's mock cluster (its own group
//! coordinator; `SHOP_GROUP_BROKER=tansu` runs the same on tansu), REST
//! shoppers through the gateway, and the figures measured from the
//! databases (`shop_e2e::churn`).

use shop_e2e::chaos::clients::{self, Seen};
use shop_e2e::churn::{self, Event, Happened};
use shop_e2e::invariant;
use shop_e2e::{Service, Stack, StackOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;

/// Shoppers paced to a load the machine carries with room to spare, so
/// that what is measured is the rebalancing, not a saturated CPU.
struct Shoppers {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Seen>,
}

impl Shoppers {
    async fn start(stack: &Stack, count: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        for c in 0..count {
            let users: Vec<String> = (0..2).map(|_| uuid::Uuid::new_v4().to_string()).collect();
            for user in &users {
                stack.open_account(user, 50_000).await;
            }
            tasks.spawn(clients::shop(
                stack.gateway_url(),
                users,
                c + 1,
                Arc::clone(&stop),
                Duration::from_millis(40),
            ));
        }
        Self { stop, tasks }
    }

    async fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let mut seen = Seen::default();
        while let Some(done) = self.tasks.join_next().await {
            seen.merge(done.expect("a shopper panicked"));
        }
        seen
    }
}

/// Every order settles, the invariant holds and no client saw a 500.
async fn assert_settled_and_consistent(stack: &Stack, seen: &Seen) {
    let summary = invariant::settled_and_consistent(stack, Duration::from_secs(60)).await;
    assert_eq!(seen.internal_errors(), 0, "{:?}", seen.statuses);
    assert_eq!(seen.unresolved, 0, "every write got a definite answer");
    assert!(
        seen.conflicting_keys.is_empty(),
        "{:?}",
        seen.conflicting_keys
    );
    assert!(
        summary.orders >= seen.orders.len(),
        "every acknowledged order exists: {summary:?}"
    );
    eprintln!("settled: {summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_joining_leaving_and_killed_stall_no_partition_past_the_bounds() {
    let mut stack = Stack::start_with(StackOptions::group(3)).await;
    for service in Service::BOTH {
        stack.replica(service, 1).start().await;
    }
    let shoppers = Shoppers::start(&stack, 4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut happened = churn::membership_events(&mut stack, 1, churn::GAP).await;
    let rolling = churn::rolling_restart(&mut stack, churn::READY_PAUSE).await;
    tokio::time::sleep(churn::GAP).await;
    let seen = shoppers.stop().await;
    assert_settled_and_consistent(&stack, &seen).await;

    churn::measure_stalls(&stack, &mut happened, churn::GAP)
        .await
        .expect("inbox readable");
    let (orders, _) = stack.pools().await;
    let settled = churn::settle_times(&orders, rolling.0, rolling.1)
        .await
        .expect("orders readable");
    eprintln!("{}", churn::report(&happened, &settled));

    for h in &happened {
        let stall = h.stall.expect("measured");
        let bound = match h.event {
            Event::Join | Event::Leave => Duration::from_secs(5),
            Event::KillRestart => Duration::from_secs(15),
            Event::Freeze => unreachable!("not scripted here"),
        };
        assert!(
            stall <= bound,
            "{} of {} stalled a partition {stall:?} (bound {bound:?})\n{}",
            h.event.label(),
            h.service.name(),
            stack.logs()
        );
    }
    assert!(
        !settled.is_empty(),
        "orders were created during the rolling restart"
    );
    // A restart is a leave (one rebalance round) and a join (two: revoke,
    // then assign); the mock ends a round when every member has synced or
    // after the session (1.5 s), so with heartbeats and the restart 5 s
    // bounds it whatever the machine's load. Alone on a 2-core machine the
    // p99 is about 0.5 s (README, "Scaling").
    let p99 = churn::quantile(&settled, 0.99);
    assert!(
        p99 <= 5.0,
        "settle p99 {p99:.2} s during the rolling restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_replica_gives_up_its_partitions_and_locks_within_the_bound() {
    let mut options = StackOptions::group(2);
    // A frozen replica's open transaction ends this long after its last
    // statement (the production default is 10 s).
    options.env.push((
        "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS".to_owned(),
        "3000".to_owned(),
    ));
    let mut stack = Stack::start_with(options).await;
    stack.replica(Service::Payments, 1).start().await;
    let shoppers = Shoppers::start(&stack, 4).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let frozen = stack.replica(Service::Payments, 1).pid().expect("running");
    shop_e2e::process::signal(frozen, "STOP");
    let mut happened = vec![Happened::now(Event::Freeze, Service::Payments)];
    // The bound: the session (1.5 s) and a rebalance round, then the idle
    // transaction's timeout (3 s) for rows it had locked; 10 s with room.
    let bound = Duration::from_secs(10);
    let frozen_for = Duration::from_secs(14);
    tokio::time::sleep(frozen_for).await;
    // Measured while it is still frozen: the survivor took every partition.
    churn::measure_stalls(&stack, &mut happened, frozen_for)
        .await
        .expect("inbox readable");
    shop_e2e::process::signal(frozen, "CONT");
    let stall = happened[0].stall.expect("measured");
    eprintln!("frozen replica: partitions stalled at most {stall:?}");
    assert!(
        stall <= bound,
        "with a replica frozen, a partition stalled {stall:?} (bound {bound:?})\n{}",
        stack.logs()
    );

    // Thawed, it finds its partitions gone and applies nothing twice.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let seen = shoppers.stop().await;
    assert_settled_and_consistent(&stack, &seen).await;
}
