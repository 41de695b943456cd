//! `orders [serve|migrate|dead-letters list|replay|health [ADDR]]`: a thin entry
//! point over the library.

use shop_orders::{config::SPEC, startup};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shop_service::main(&SPEC, |config, shutdown| async move {
        startup::build(&config, &shutdown)
            .await?
            .run_until_stopped(shutdown)
            .await
    })
    .await
}
