//! The operations kit in `deploy/` checked by the real tools and against the
//! code: Prometheus's own `promtool` validates the scrape configuration and
//! the alert rules, runs the rules' unit tests, and parses every dashboard
//! query; every metric the rules and the dashboard use is one the code
//! exports, and the dashboard shows every gauge and histogram the code
//! exports.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

fn deploy(path: &str) -> PathBuf {
    root().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `promtool` (Debian's `prometheus` package, which `make test`
/// installs); panics with its output unless it succeeds.
fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .expect("promtool runs (make test installs it: Debian's `prometheus` package)");
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn dashboard() -> Value {
    serde_json::from_str(&read(&deploy("grafana/dashboards/shop.json"))).expect("dashboard JSON")
}

fn dashboard_queries() -> Vec<String> {
    dashboard()["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().expect("a query").to_owned())
        .collect()
}

/// The metric names in PromQL `text` (ours start with `shop_` or `http_`),
/// without a histogram's `_bucket` / `_count` / `_sum` suffix.
fn metrics_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("shop_") || word.starts_with("http_"))
        .map(|word| {
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word)
                .to_owned()
        })
        .collect()
}

/// Every metric the code records: `counter!`, `gauge!` and `histogram!`
/// names in the workspace's sources, by kind.
fn exported() -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for krate in ["db", "gateway", "orders", "payments", "runtime"] {
        let mut dirs = vec![root().join(krate).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("source dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let source = read(&path);
                    for kind in ["counter", "gauge", "histogram"] {
                        let call = format!("{kind}!(");
                        for (at, _) in source.match_indices(&call) {
                            let rest = source[at + call.len()..].trim_start();
                            // A literal name, or a constant of the same file.
                            let name = rest
                                .strip_prefix('"')
                                .and_then(|r| r.split('"').next())
                                .or_else(|| {
                                    let ident: String = rest
                                        .chars()
                                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                                        .collect();
                                    let decl = format!("const {ident}: &str = \"");
                                    let at = source.find(&decl)? + decl.len();
                                    source[at..].split('"').next()
                                });
                            if let Some(name) = name {
                                found.push((kind, name.to_owned()));
                            }
                        }
                    }
                }
            }
        }
    }
    found
}

#[test]
fn promtool_accepts_the_configuration_and_the_rules_pass_their_tests() {
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"]);
}

#[test]
fn every_dashboard_query_parses() {
    // promtool parses the queries as recording rules.
    let rules: Vec<Value> = dashboard_queries()
        .into_iter()
        .enumerate()
        .map(|(i, expr)| serde_json::json!({ "record": format!("dashboard:query_{i}"), "expr": expr }))
        .collect();
    let file = std::env::temp_dir().join(format!("shop-dashboard-{}.json", std::process::id()));
    let groups = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    std::fs::write(&file, groups.to_string()).expect("temp file");
    promtool(&["check", "rules", file.to_str().expect("path")]);
    let _ = std::fs::remove_file(file);
}

#[test]
fn rules_and_dashboard_use_only_exported_metrics_and_show_the_key_ones() {
    let exported = exported();
    let names: BTreeSet<String> = exported.iter().map(|(_, name)| name.clone()).collect();
    assert!(
        names.contains("shop_outbox_backlog"),
        "the scan finds the code's metrics"
    );

    let rules = metrics_in(&read(&deploy("prometheus/alerts.yml")));
    let shown = metrics_in(&dashboard_queries().join("\n"));
    for (what, used) in [("alerts.yml", &rules), ("the dashboard", &shown)] {
        let unknown: Vec<&String> = used.difference(&names).collect();
        assert!(
            unknown.is_empty(),
            "{what} uses metrics the code does not export: {unknown:?}"
        );
    }
    // The reverse: every gauge and histogram, and the request and dead-letter
    // counters, are on the dashboard.
    let key: BTreeSet<String> = exported
        .iter()
        .filter(|(kind, _)| *kind != "counter")
        .map(|(_, name)| name.clone())
        .chain([
            "http_requests_total".into(),
            "shop_dead_letters_total".into(),
        ])
        .collect();
    let missing: Vec<&String> = key.difference(&shown).collect();
    assert!(missing.is_empty(), "the dashboard lacks {missing:?}");
    for alerted in [
        "shop_outbox_oldest_unpublished_seconds",
        "shop_inbox_lag",
        "shop_dead_letters_pending",
        "shop_serving",
        "shop_order_settle_seconds",
    ] {
        assert!(rules.contains(alerted), "no alert on {alerted}");
    }
}
