//! The shop front: one page and its assets, compiled into the binary (no
//! CDN, works offline).

use axum::http::header;
use axum::response::{Html, IntoResponse};

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");

/// `GET /`: the single page.
pub async fn index() -> Html<&'static str> {
    Html(INDEX)
}

/// `GET /assets/app.js`.
pub async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

/// `GET /assets/app.css`.
pub async fn app_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], APP_CSS)
}
