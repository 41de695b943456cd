//! The README's "Configuration" tables are the one place the variables are
//! documented. This checks them against the code: every variable a binary
//! reads (as recorded by `shop_runtime::Env` while each configuration is
//! built from an empty environment) has a row, with its default among the
//! row's defaults, and no row names a variable nothing reads.

use shop_runtime::Env;
use std::collections::{BTreeMap, BTreeSet};

/// The variables of one table: name → the backticked values of its default cell.
type Table = BTreeMap<String, Vec<String>>;

/// The two tables of the README's "Configuration" section: the services'
/// (names after the prefix) and the gateway's (full names).
fn documented() -> (Table, Table) {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has a Configuration section");
    let mut tables = vec![Table::new()];
    for line in section.lines() {
        if line.starts_with("The gateway's own variables") {
            tables.push(Table::new());
        }
        if !line.starts_with("| `") {
            continue;
        }
        let mut cells = line.trim_matches('|').split(" | ");
        let (names, defaults) = (cells.next().unwrap_or(""), cells.next().unwrap_or(""));
        let defaults = backticked(defaults);
        let table = tables.last_mut().expect("one table at least");
        for name in backticked(names) {
            table.insert(name, defaults.clone());
        }
    }
    assert_eq!(
        tables.len(),
        2,
        "two tables: the services' and the gateway's"
    );
    let gateway = tables.pop().expect("gateway table");
    let services = tables.pop().expect("services table");
    (services, gateway)
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// What the code asks for, names without `strip`.
fn asked(env: &Env, strip: &str) -> BTreeMap<String, Option<String>> {
    env.asked()
        .into_iter()
        .map(|(name, default)| (name.trim_start_matches(strip).to_owned(), default))
        .collect()
}

fn check(table: &Table, code: &BTreeMap<String, Option<String>>, what: &str) {
    let documented: BTreeSet<&String> = table.keys().collect();
    let read: BTreeSet<&String> = code.keys().collect();
    assert_eq!(
        documented, read,
        "{what}: the README's table (left) and the variables the code reads (right) differ"
    );
    for (name, default) in code {
        if let Some(default) = default {
            assert!(
                table[name].contains(default),
                "{what}: {name} defaults to `{default}` but the README says {:?}",
                table[name]
            );
        }
    }
}

#[test]
fn every_variable_the_binaries_read_is_in_the_readme_with_its_default() {
    let (services, gateway) = documented();

    let mut code = BTreeMap::new();
    for (spec, prefix) in [
        (&shop_orders::config::SPEC, "ORDERS_"),
        (&shop_payments::config::SPEC, "PAYMENTS_"),
    ] {
        let env = Env::from_pairs(prefix, [] as [(String, String); 0]);
        shop_service::ServiceConfig::from_env(spec, &env).expect("defaults are valid");
        if prefix == "ORDERS_" {
            shop_orders::expiry::ExpiryConfig::from_env(&env).expect("defaults are valid");
        }
        code.extend(asked(&env, prefix));
    }
    check(&services, &code, "services");

    let env = Env::from_pairs("GATEWAY_", [("GATEWAY_AUTH", "dev")]);
    shop_gateway::config::GatewayConfig::from_env(&env).expect("defaults are valid");
    check(&gateway, &asked(&env, ""), "gateway");
}
