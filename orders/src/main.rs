//! `orders [serve|migrate|replay-dead-letters|health [ADDR]]`: a thin entry point over the library.

use shop_orders::{Application, startup::SPEC};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shop_db::service::main::<Application>(&SPEC).await
}
