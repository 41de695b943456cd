//! Keeps docker-compose.yml and the Dockerfile in step with the code, without
//! a Docker engine: every variable a container is given is one the code reads
//! (and parses), ports and topic names match the code's defaults, and every
//! long-running service has a health check.

use serde_json::Value;
use shop_db::kafka::{DEFAULT_REQUESTS_TOPIC, DEFAULT_RESULTS_TOPIC};
use shop_runtime::Env;
use shop_service::{ServiceConfig, ServiceSpec};
use std::collections::BTreeMap;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

fn compose() -> Value {
    let text =
        std::fs::read_to_string(root().join("docker-compose.yml")).expect("docker-compose.yml");
    yaml_serde::from_str(&text).expect("valid YAML")
}

fn dockerfile() -> String {
    std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile")
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_object()
        .expect("environment map")
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), value)
        })
        .collect()
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().expect("port")
}

/// The Dockerfile stage `name`'s lines, up to the next stage.
fn stage<'a>(dockerfile: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!(" AS {name}");
    dockerfile
        .lines()
        .skip_while(|l| !(l.starts_with("FROM ") && l.ends_with(&header)))
        .skip(1)
        .take_while(|l| !l.starts_with("FROM "))
        .collect()
}

fn check_backend(compose: &Value, spec: &ServiceSpec) {
    let service = &compose["services"][spec.name];
    let vars = environment(service);
    let env = Env::from_pairs(spec.prefix, vars.clone());
    let config =
        ServiceConfig::from_env(spec, &env).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
    assert!(
        env.unknown().is_empty(),
        "{}: variables the code never reads: {:?}",
        spec.name,
        env.unknown()
    );
    for required in ["LISTEN_ADDR", "DATABASE_URL", "KAFKA_BROKERS"] {
        let var = format!("{}{required}", spec.prefix);
        assert!(
            vars.contains_key(&var),
            "{}: {var} must be set in a container",
            spec.name
        );
    }
    assert_eq!(
        config.listen_addr.port().to_string(),
        port_of(spec.listen_addr),
        "{} port",
        spec.name
    );
    assert_eq!(config.kafka.topics.requests, DEFAULT_REQUESTS_TOPIC);
    assert_eq!(config.kafka.topics.results, DEFAULT_RESULTS_TOPIC);
    assert!(
        config
            .database
            .url
            .ends_with(&format!("/{}", spec.database)),
        "{} database",
        spec.name
    );
    assert_eq!(config.kafka.brokers, "kafka:9092");

    let init = compose["services"]["kafka-init"]["command"].to_string();
    for topic in [DEFAULT_REQUESTS_TOPIC, DEFAULT_RESULTS_TOPIC] {
        assert!(init.contains(topic), "kafka-init creates {topic}");
    }
    assert!(
        init.contains(&format!("--partitions {}", config.kafka.topics.partitions)),
        "kafka-init creates as many partitions as {} is told",
        spec.name
    );

    // Replicas share the partitions through their consumer group, and
    // none may publish a port or pin a container name (two would clash).
    assert_eq!(
        service["deploy"]["replicas"], 2,
        "{} runs two replicas",
        spec.name
    );
    assert_eq!(
        vars.get(&format!("{}CONSUMER_ASSIGNMENT", spec.prefix))
            .map(String::as_str),
        Some("group"),
        "{} replicas split the partitions",
        spec.name
    );
    assert!(service.get("container_name").is_none());

    let docker = dockerfile();
    let lines = stage(&docker, spec.name);
    assert!(
        lines
            .iter()
            .any(|l| l.trim() == format!("EXPOSE {}", port_of(spec.listen_addr))),
        "{} EXPOSE",
        spec.name
    );
    assert!(
        lines.iter().any(|l| l.starts_with("HEALTHCHECK")),
        "{} image health check",
        spec.name
    );
    assert_eq!(
        service["build"]["target"], spec.name,
        "{} built from its Dockerfile stage",
        spec.name
    );
}

#[test]
fn backend_services_match_the_code() {
    let compose = compose();
    check_backend(&compose, &shop_orders::config::SPEC);
    check_backend(&compose, &shop_payments::config::SPEC);
}

#[test]
fn gateway_matches_the_code() {
    let compose = compose();
    let gateway = &compose["services"]["gateway"];
    let env = Env::from_pairs(shop_gateway::config::PREFIX, environment(gateway));
    let config = shop_gateway::GatewayConfig::from_env(&env).expect("gateway config");
    assert!(
        env.unknown().is_empty(),
        "unknown gateway variables: {:?}",
        env.unknown()
    );
    assert_eq!(config.listen_addr.port(), 8080);
    assert_eq!(
        config.orders_url,
        format!(
            "http://orders:{}",
            port_of(shop_orders::config::SPEC.listen_addr)
        )
    );
    assert_eq!(
        config.payments_url,
        format!(
            "http://payments:{}",
            port_of(shop_payments::config::SPEC.listen_addr)
        )
    );
    assert_eq!(gateway["ports"], serde_json::json!(["8080:8080"]));
    let docker = dockerfile();
    assert!(
        stage(&docker, "gateway")
            .iter()
            .any(|l| l.trim() == "EXPOSE 8080")
    );
}

/// The services of the observability profile (trace backend, Prometheus,
/// Grafana), which publish their UIs.
fn in_observability_profile(service: &Value) -> bool {
    service["profiles"]
        .as_array()
        .is_some_and(|profiles| profiles.iter().any(|p| p == "observability"))
}

#[test]
fn the_observability_profile_scrapes_every_service_with_the_rules_and_dashboard() {
    let compose = compose();
    let services = &compose["services"];
    for name in ["jaeger", "prometheus", "grafana"] {
        assert!(
            in_observability_profile(&services[name]),
            "{name} is in the observability profile"
        );
    }
    let volumes = |name: &str| services[name]["volumes"].to_string();
    assert!(volumes("prometheus").contains("./deploy/prometheus:/etc/prometheus"));
    assert!(volumes("grafana").contains("./deploy/grafana/dashboards:/var/lib/grafana/dashboards"));
    assert!(volumes("grafana").contains("./deploy/grafana/provisioning:/etc/grafana/provisioning"));

    // Prometheus scrapes each service on the metrics port compose gives it.
    let prometheus: Value = yaml_serde::from_str(
        &std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml"))
            .expect("prometheus.yml"),
    )
    .expect("valid YAML");
    assert_eq!(prometheus["rule_files"], serde_json::json!(["alerts.yml"]));
    let jobs = prometheus["scrape_configs"]
        .as_array()
        .expect("scrape configs");
    let job = |name: &str| {
        jobs.iter()
            .find(|j| j["job_name"] == name)
            .unwrap_or_else(|| panic!("Prometheus scrapes {name}"))
    };
    for spec in [&shop_orders::config::SPEC, &shop_payments::config::SPEC] {
        let vars = environment(&services[spec.name]);
        let metrics_addr = &vars[&format!("{}METRICS_ADDR", spec.prefix)];
        let sd = &job(spec.name)["dns_sd_configs"][0];
        assert_eq!(sd["names"], serde_json::json!([spec.name]), "every replica");
        assert_eq!(
            sd["port"].to_string(),
            port_of(metrics_addr),
            "{} port",
            spec.name
        );
    }
    assert_eq!(
        job("gateway")["static_configs"][0]["targets"],
        serde_json::json!(["gateway:8080"])
    );
    // Each process can send its traces to Jaeger's OTLP port.
    for name in ["orders", "payments", "gateway"] {
        assert!(
            environment(&services[name]).contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{name} takes OTEL_EXPORTER_OTLP_ENDPOINT"
        );
    }
}

#[test]
fn every_long_running_service_has_a_health_check_and_only_the_gateway_is_published() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    for (name, service) in services {
        if service["restart"] == "no" {
            continue; // one-shot jobs
        }
        assert!(
            service["healthcheck"]["test"].is_array(),
            "{name} has no health check"
        );
        if name != "gateway" && !in_observability_profile(service) {
            assert!(
                service.get("ports").is_none(),
                "{name} should not publish ports"
            );
        }
        if let Some(deps) = service["depends_on"].as_object() {
            for (dep, condition) in deps {
                let condition = condition["condition"].as_str().unwrap_or_default();
                assert!(
                    condition == "service_healthy" || condition == "service_completed_successfully",
                    "{name} waits for {dep} without a health condition"
                );
            }
        }
    }
}
