//! `group-member BROKERS TOPIC GROUP SESSION_MS STRATEGY`: a plain librdkafka consumer
//! (none of the service's code) that joins GROUP on TOPIC and prints
//! `assigned P,P,…` every time its assignment changes, until it is killed.
//! The tests of the test brokers run it as a process, so that one member can
//! be killed with `kill -9` while another lives (`e2e/tests/it/brokers.rs`).

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, topic, group, session, strategy] = args.as_slice() else {
        eprintln!("usage: group-member BROKERS TOPIC GROUP SESSION_MS STRATEGY");
        return ExitCode::FAILURE;
    };
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("session.timeout.ms", session)
        .set("partition.assignment.strategy", strategy)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "25")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("consumer: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = consumer.subscribe(&[topic]) {
        eprintln!("subscribe: {e}");
        return ExitCode::FAILURE;
    }
    let mut shown = None;
    loop {
        // Polling drives the group protocol; messages are not the point.
        let _ = consumer.poll(Duration::from_millis(100));
        let mut now: Vec<i32> = consumer
            .assignment()
            .map(|list| list.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        now.sort_unstable();
        if shown.as_ref() != Some(&now) {
            let text: Vec<String> = now.iter().map(i32::to_string).collect();
            println!("assigned {}", text.join(","));
            let _ = std::io::stdout().flush();
            shown = Some(now);
        }
    }
}
