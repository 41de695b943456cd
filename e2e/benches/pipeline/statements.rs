//! PostgreSQL's own account of one step: statement calls, rows and execution
//! time per order, per statement, from `pg_stat_statements` (which
//! `make bench` preloads on a cluster of its own). Only statements the
//! services sent count (`toplevel`: not those a trigger function runs); the
//! load generator's own queries are tagged `/* bench */` and left out.

use shop_db::Pool;

/// One normalised statement's share of a step, per order.
pub struct Statement {
    pub database: String,
    pub calls: f64,
    pub rows: f64,
    pub ms: f64,
    pub query: String,
}

/// Every statement the services ran during a step.
pub struct Statements {
    pub per_order: f64,
    pub by_statement: Vec<Statement>,
}

/// Forgets what was counted so far; `false` where the extension is not
/// loaded (the counts are then not reported).
pub async fn reset(db: &Pool) -> bool {
    let Ok(client) = db.get().await else {
        return false;
    };
    client
        .batch_execute(
            "/* bench */ CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
             /* bench */ SELECT pg_stat_statements_reset();",
        )
        .await
        .is_ok()
}

/// What the services' statements in both databases cost since [`reset`],
/// divided by `orders`, most expensive first.
pub async fn read(orders_db: &Pool, payments_db: &Pool, orders: usize) -> Option<Statements> {
    let name = |pool: &Pool| {
        let pool = pool.clone();
        async move {
            let client = pool.get().await.ok()?;
            let row = client
                .query_one("/* bench */ SELECT current_database()", &[])
                .await
                .ok()?;
            row.try_get::<_, String>(0).ok()
        }
    };
    let databases = vec![name(orders_db).await?, name(payments_db).await?];
    let client = orders_db.get().await.ok()?;
    let rows = client
        .query(
            "SELECT d.datname, s.calls::float8, s.rows::float8, s.total_exec_time, s.query
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
             WHERE d.datname = ANY($1) AND s.toplevel AND s.query NOT LIKE '/* bench */%'
             ORDER BY s.total_exec_time DESC",
            &[&databases],
        )
        .await
        .ok()?;
    let orders = orders.max(1) as f64;
    let by_statement: Vec<Statement> = rows
        .iter()
        .map(|row| Statement {
            database: if row.get::<_, String>(0) == databases[0] {
                "orders".into()
            } else {
                "payments".into()
            },
            calls: row.get::<_, f64>(1) / orders,
            rows: row.get::<_, f64>(2) / orders,
            ms: row.get::<_, f64>(3) / orders,
            query: row
                .get::<_, String>(4)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect();
    Some(Statements {
        per_order: by_statement.iter().map(|s| s.calls).sum(),
        by_statement,
    })
}

impl Statements {
    /// The table `make bench` prints: the `top` statements by time.
    pub fn print(&self, top: usize) {
        println!(
            "         statements per order: {:.2} (by execution time, per order)",
            self.per_order
        );
        println!("           db        calls   rows      ms  statement");
        for s in self.by_statement.iter().take(top) {
            let query: String = s.query.chars().take(90).collect();
            println!(
                "           {:<8} {:>6.3} {:>6.2} {:>7.4}  {query}",
                s.database, s.calls, s.rows, s.ms
            );
        }
    }
}
