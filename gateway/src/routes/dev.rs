//! `POST /api/v1/dev/tokens` `{"user_id"}`: a bearer token for any user, for
//! curl, the web UI and tests. Served only with `GATEWAY_AUTH=dev` — which
//! must never face real users — and not part of the API document.

use super::AppState;
use crate::dto::{AccessToken, DevTokenRequest};
use crate::extract::{ApiJson, invalid_body};
use crate::problem::{ApiCode, ApiError};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use shop_proto::values::UserId;

/// Issues a token whose subject is `user_id`.
pub async fn dev_token(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<DevTokenRequest>,
) -> Result<Json<AccessToken>, ApiError> {
    let user = UserId::parse(&body.user_id).map_err(invalid_body)?;
    let access_token = state.auth.issue(user).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            ApiCode::NoSigningKey,
            "this gateway holds no signing key",
        )
    })?;
    Ok(Json(AccessToken {
        access_token,
        token_type: "Bearer".to_owned(),
        expires_in: state.auth.token_ttl.as_secs(),
    }))
}
