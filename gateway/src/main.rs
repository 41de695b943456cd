//! `gateway [serve|openapi|token <user_id>|health]`: a thin entry point over
//! the library.

use shop_gateway::{GatewayConfig, config::PREFIX, startup};
use shop_runtime::cli::{self, Command};
use shop_runtime::{Env, shutdown, telemetry};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    cli::exit("gateway", run(Command::from_process()).await)
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command.name.as_str() {
        "openapi" => {
            print!("{}", startup::openapi_yaml());
            Ok(())
        }
        "serve" => {
            let config = GatewayConfig::from_env(&Env::from_process(PREFIX))?;
            let telemetry = telemetry::init(config.log_format, "gateway");
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone());
            let served = match startup::Application::build(&config).await {
                Ok(app) => app.run_until_stopped(token).await,
                Err(e) => Err(e),
            };
            // The last spans are exported before the process exits.
            telemetry.shutdown().await;
            served
        }
        "token" => {
            let user = command
                .args
                .first()
                .ok_or_else(|| anyhow::anyhow!("usage: gateway token <user_id>"))?;
            let user = shop_proto::values::UserId::parse(user)?;
            let config = GatewayConfig::from_env(&Env::from_process(PREFIX))?;
            let token = config.auth.issue(user).ok_or_else(|| {
                anyhow::anyhow!(
                    "no signing key: set GATEWAY_JWT_SECRET or GATEWAY_JWT_PRIVATE_KEY_FILE"
                )
            })?;
            println!("{token}");
            Ok(())
        }
        "health" => {
            let config = GatewayConfig::from_env(&Env::from_process(PREFIX))?;
            startup::check_health(config.listen_addr).await?;
            println!("SERVING");
            Ok(())
        }
        _ => Err(command.unknown("`serve`, `openapi`, `token <user_id>` or `health`")),
    }
}
