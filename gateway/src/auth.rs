//! Who is calling. Every API route acts as the user named by the bearer
//! token's `sub` (a JWT, checked for signature, issuer, audience and
//! expiry with a small leeway); nobody can read or change another user's
//! account or orders.
//!
//! Modes (`GATEWAY_AUTH`):
//! - `jwt` (the default): tokens come from an identity provider; the
//!   gateway needs a verification key (`GATEWAY_JWT_SECRET` for HS256, or
//!   `GATEWAY_JWT_PUBLIC_KEY_FILE`, an Ed25519 or RSA public key in PEM) and
//!   refuses to start without one.
//! - `dev`: additionally serves `POST /api/v1/dev/tokens`, which hands a
//!   token to anyone for any user — for curl, the web UI and tests, never
//!   for real users. Without a configured key it signs with a random secret
//!   made at start.
//!
//! Browsers' EventSource cannot send headers, so a live status stream also
//! accepts `?access_token=`: a short-lived token for that one order
//! (`POST /api/v1/orders/{order_id}/events-token`), signed with the
//! gateway's own key (`GATEWAY_STREAM_TOKEN_SECRET`, random when unset).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use shop_proto::values::{OrderId, UserId};
use shop_runtime::{ConfigError, Env};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How callers are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Tokens from an identity provider only.
    Jwt,
    /// Also the open token route, for development.
    Dev,
}

/// What the gateway knows to check and (where it can) issue tokens.
#[derive(Clone)]
pub struct Auth {
    pub mode: Mode,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    algorithm: Algorithm,
    issuer: String,
    audience: String,
    leeway: Duration,
    /// Lifetime of the tokens this gateway issues.
    pub token_ttl: Duration,
    /// The gateway's own HMAC key for live-status tokens, independent of the
    /// identity provider's keys (so no provider private key is needed).
    stream_encoding: EncodingKey,
    stream_decoding: DecodingKey,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a key.
        f.debug_struct("Auth")
            .field("mode", &self.mode)
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The claims of a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
    iat: u64,
    /// Only in a live-status token: the one order it opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    order: Option<String>,
}

/// Why a token was refused (never says more than that to the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a bearer token is required")]
    Missing,
    #[error("the bearer token is invalid or expired")]
    Invalid,
}

impl Auth {
    /// Reads `GATEWAY_AUTH` and the `GATEWAY_JWT_*` variables.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mode = match env.string_or("AUTH", "jwt").as_str() {
            "jwt" => Mode::Jwt,
            "dev" => Mode::Dev,
            other => return Err(env.invalid("AUTH", other, "expected `jwt` or `dev`")),
        };
        let issuer = env.string_or("JWT_ISSUER", "shop");
        let audience = env.string_or("JWT_AUDIENCE", "shop-api");
        let leeway_s: u64 = env.parse_or("JWT_LEEWAY_S", 30)?;
        if leeway_s > 300 {
            return Err(env.invalid("JWT_LEEWAY_S", &leeway_s.to_string(), "must be at most 300"));
        }
        let leeway = Duration::from_secs(leeway_s);
        let token_ttl = env.millis_or("JWT_TTL_MS", Duration::from_secs(3600))?;
        let read = |name: &str| -> Result<Option<Vec<u8>>, ConfigError> {
            env.raw(name)
                .map(|path| {
                    std::fs::read(path).map_err(|e| env.invalid(name, path, &e.to_string()))
                })
                .transpose()
        };
        let secret = env.raw("JWT_SECRET").map(str::to_owned);
        let public = read("JWT_PUBLIC_KEY_FILE")?;
        let private = read("JWT_PRIVATE_KEY_FILE")?;
        let (algorithm, decoding, encoding) = match (secret, public) {
            (Some(_), Some(_)) => {
                return Err(env.invalid(
                    "JWT_SECRET",
                    "(hidden)",
                    "set either a secret or a public key file, not both",
                ));
            }
            (Some(secret), None) => {
                if secret.len() < 32 {
                    return Err(env.invalid("JWT_SECRET", "(hidden)", "must be at least 32 bytes"));
                }
                // The development and demo secrets are public (they are in
                // this repository): never accept them in production mode.
                if mode == Mode::Jwt && secret.contains("never-use-in-production") {
                    return Err(env.invalid(
                        "JWT_SECRET",
                        "(hidden)",
                        "this is a published development secret; GATEWAY_AUTH=jwt needs your own",
                    ));
                }
                let bytes = secret.into_bytes();
                (
                    Algorithm::HS256,
                    DecodingKey::from_secret(&bytes),
                    Some(EncodingKey::from_secret(&bytes)),
                )
            }
            (None, Some(pem)) => {
                let bad = |e: jsonwebtoken::errors::Error| {
                    env.invalid(
                        "JWT_PUBLIC_KEY_FILE",
                        "(file)",
                        &format!("not an Ed25519 or RSA public key: {e}"),
                    )
                };
                let (algorithm, decoding) = match DecodingKey::from_ed_pem(&pem) {
                    Ok(key) => (Algorithm::EdDSA, key),
                    Err(_) => (
                        Algorithm::RS256,
                        DecodingKey::from_rsa_pem(&pem).map_err(bad)?,
                    ),
                };
                let encoding = private
                    .map(|pem| match algorithm {
                        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
                        _ => EncodingKey::from_rsa_pem(&pem),
                    })
                    .transpose()
                    .map_err(|e| env.invalid("JWT_PRIVATE_KEY_FILE", "(file)", &e.to_string()))?;
                (algorithm, decoding, encoding)
            }
            (None, None) if mode == Mode::Dev => {
                let secret: Vec<u8> = (0..2)
                    .flat_map(|_| uuid::Uuid::new_v4().into_bytes())
                    .collect();
                (
                    Algorithm::HS256,
                    DecodingKey::from_secret(&secret),
                    Some(EncodingKey::from_secret(&secret)),
                )
            }
            (None, None) => {
                return Err(env.invalid(
                    "JWT_SECRET",
                    "",
                    "GATEWAY_AUTH=jwt needs GATEWAY_JWT_SECRET or GATEWAY_JWT_PUBLIC_KEY_FILE",
                ));
            }
        };
        let stream_secret = match env.raw("STREAM_TOKEN_SECRET") {
            Some(secret) if secret.len() >= 32 => secret.as_bytes().to_vec(),
            Some(_) => {
                return Err(env.invalid(
                    "STREAM_TOKEN_SECRET",
                    "(hidden)",
                    "must be at least 32 bytes",
                ));
            }
            // One gateway: a key of its own, made at start. Several replicas
            // behind one address share GATEWAY_STREAM_TOKEN_SECRET.
            None => (0..2)
                .flat_map(|_| uuid::Uuid::new_v4().into_bytes())
                .collect(),
        };
        Ok(Self {
            mode,
            decoding,
            encoding,
            algorithm,
            issuer,
            audience,
            leeway,
            token_ttl,
            stream_encoding: EncodingKey::from_secret(&stream_secret),
            stream_decoding: DecodingKey::from_secret(&stream_secret),
        })
    }

    /// The user a bearer access token speaks for.
    pub fn user(&self, token: &str) -> Result<UserId, AuthError> {
        let claims = self.decode(token, &self.audience, self.algorithm, &self.decoding)?;
        if claims.order.is_some() {
            return Err(AuthError::Invalid);
        }
        UserId::parse(&claims.sub).map_err(|_| AuthError::Invalid)
    }

    /// The user a live-status token speaks for, if it was issued for `order`.
    pub fn stream_user(&self, token: &str, order: OrderId) -> Result<UserId, AuthError> {
        let claims = self.decode(
            token,
            &self.stream_audience(),
            Algorithm::HS256,
            &self.stream_decoding,
        )?;
        if claims.order.as_deref() != Some(order.to_string().as_str()) {
            return Err(AuthError::Invalid);
        }
        UserId::parse(&claims.sub).map_err(|_| AuthError::Invalid)
    }

    /// An access token for `user`, if this gateway holds a signing key.
    pub fn issue(&self, user: UserId) -> Option<String> {
        let key = self.encoding.as_ref()?;
        self.sign(
            user,
            None,
            &self.audience,
            self.token_ttl,
            self.algorithm,
            key,
        )
    }

    /// A token that opens `order`'s live status for five minutes.
    pub fn issue_stream(&self, user: UserId, order: OrderId) -> Option<String> {
        let audience = self.stream_audience();
        let key = &self.stream_encoding;
        self.sign(
            user,
            Some(order),
            &audience,
            STREAM_TTL,
            Algorithm::HS256,
            key,
        )
    }

    fn stream_audience(&self) -> String {
        format!("{}:order-events", self.audience)
    }

    fn sign(
        &self,
        user: UserId,
        order: Option<OrderId>,
        aud: &str,
        ttl: Duration,
        algorithm: Algorithm,
        key: &EncodingKey,
    ) -> Option<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let claims = Claims {
            sub: user.to_string(),
            iss: self.issuer.clone(),
            aud: aud.to_owned(),
            exp: now + ttl.as_secs(),
            iat: now,
            order: order.map(|o| o.to_string()),
        };
        jsonwebtoken::encode(&Header::new(algorithm), &claims, key).ok()
    }

    fn decode(
        &self,
        token: &str,
        audience: &str,
        algorithm: Algorithm,
        key: &DecodingKey,
    ) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = self.leeway.as_secs();
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|_| AuthError::Invalid)
    }
}

/// Lifetime of a live-status token.
pub const STREAM_TTL: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Auth {
        Auth::from_env(&Env::from_pairs("GATEWAY_", [("GATEWAY_AUTH", "dev")])).expect("dev")
    }

    #[test]
    fn jwt_mode_refuses_to_start_without_a_key() {
        let err = Auth::from_env(&Env::from_pairs("GATEWAY_", Vec::<(&str, &str)>::new()))
            .expect_err("no key");
        assert_eq!(err.var, "GATEWAY_JWT_SECRET");
        let short = Env::from_pairs("GATEWAY_", [("GATEWAY_JWT_SECRET", "short")]);
        assert!(Auth::from_env(&short).is_err());
        let published = Env::from_pairs(
            "GATEWAY_",
            [(
                "GATEWAY_JWT_SECRET",
                "dev-only-secret-never-use-in-production",
            )],
        );
        assert!(
            Auth::from_env(&published).is_err(),
            "the published dev secret"
        );
    }

    #[test]
    fn a_token_speaks_for_its_user_only_where_it_was_meant() {
        let auth = dev();
        let user = UserId::from(uuid::Uuid::new_v4());
        let order = OrderId::new();
        let access = auth.issue(user).expect("token");
        assert_eq!(auth.user(&access), Ok(user));
        assert!(
            auth.stream_user(&access, order).is_err(),
            "not a stream token"
        );
        let stream = auth.issue_stream(user, order).expect("token");
        assert_eq!(auth.stream_user(&stream, order), Ok(user));
        assert!(
            auth.stream_user(&stream, OrderId::new()).is_err(),
            "another order"
        );
        assert!(auth.user(&stream).is_err(), "not an access token");
        assert!(dev().user(&access).is_err(), "another gateway's key");
        assert!(auth.user("garbage").is_err());
    }
}
