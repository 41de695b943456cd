//! `gateway [serve|openapi|health]`: a thin entry point over the library.

use shop_db::{Env, shutdown, telemetry};
use shop_gateway::{Application, GatewayConfig, config::PREFIX};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("openapi") => {
            print!("{}", shop_gateway::openapi::yaml());
            Ok(())
        }
        None | Some("serve") => {
            let config = GatewayConfig::from_env(&Env::from_process(PREFIX))?;
            telemetry::init(config.log_format);
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone());
            Application::build(&config)
                .await?
                .run_until_stopped(token)
                .await
        }
        Some("health") => {
            let config = GatewayConfig::from_env(&Env::from_process(PREFIX))?;
            shop_gateway::startup::check_health(config.listen_addr).await?;
            println!("ok");
            Ok(())
        }
        Some(other) => {
            anyhow::bail!("unknown command {other:?}; use `serve`, `openapi` or `health`")
        }
    }
}
