//! `payments [serve|migrate|replay-dead-letters|health [ADDR]]`: a thin entry point over the library.

use shop_db::{Env, grpc, shutdown, telemetry};
use shop_payments::{Application, PaymentsConfig, config::PREFIX, startup};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("payments: error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let config = PaymentsConfig::from_env(&Env::from_process(PREFIX))?;
    telemetry::init(config.log_format);
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone());
            Application::build(&config)
                .await?
                .run_until_stopped(token)
                .await
        }
        Some("migrate") => {
            let applied = startup::migrate_only(&config).await?;
            println!("applied {} migration(s)", applied.len());
            Ok(())
        }
        Some("replay-dead-letters") => {
            let replayed = startup::replay_dead_letters(&config).await?;
            println!("replayed {replayed} dead letter(s)");
            Ok(())
        }
        Some("health") => {
            let addr = match std::env::args().nth(2) {
                Some(a) => a.parse()?,
                None => config.listen_addr,
            };
            grpc::check_health(addr, "shop.payments.v1.Payments", Duration::from_secs(2)).await?;
            println!("SERVING");
            Ok(())
        }
        Some(other) => {
            anyhow::bail!(
                "unknown command {other:?}; use `serve`, `migrate`, `replay-dead-letters` or `health [ADDR]`"
            )
        }
    }
}
