//! Who is calling: passwords, sessions (cookie or bearer token), the
//! [`AuthUser`] extractor with its CSRF check, and the login rate limit.

pub mod password;
pub mod rate_limit;
pub mod session;

use std::future::Future;
use std::pin::Pin;

use actix_web::http::Method;
use actix_web::{web, FromRequest, HttpRequest};

use crate::app::AppState;
use crate::config::Config;
use crate::error::AppError;
use crate::models::session::Session;
use crate::models::user::User;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "inbox_session";

/// The authenticated user of a request. Extracting it fails with 401
/// without a valid session, and with 403 when a cookie-authenticated
/// state-changing request comes from another origin (CSRF).
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The user.
    pub user: User,
    /// The hash of the session token used (for logout).
    pub token_hash: String,
}

impl AuthUser {
    /// The user's team.
    pub fn team_id(&self) -> i64 {
        self.user.team_id
    }
}

/// Where the request's credentials came from.
enum Credential {
    Bearer(String),
    Cookie(String),
}

/// The token of `Authorization: Bearer TOKEN`, trimmed; the scheme's name
/// in any case (RFC 7235). The one reading of that header, for sessions and
/// for `METRICS_TOKEN`.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether `req` carries `expected` as its bearer token, compared in
/// constant time (over digests, so the token's length does not show either).
pub fn bearer_matches(req: &HttpRequest, expected: &realtime_core::Secret) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let Some(given) = bearer_token(req) else {
        return false;
    };
    let given = sha2::Sha256::digest(given.as_bytes());
    let expected = sha2::Sha256::digest(expected.expose().as_bytes());
    given.ct_eq(&expected).into()
}

fn credential(req: &HttpRequest) -> Option<Credential> {
    if let Some(token) = bearer_token(req) {
        return Some(Credential::Bearer(token.to_owned()));
    }
    req.cookie(SESSION_COOKIE)
        .map(|c| Credential::Cookie(c.value().to_owned()))
}

/// Whether a cookie-authenticated request may change state: safe methods
/// always; others only when `Origin` (or `Referer`) is this site: the origin
/// of `PUBLIC_URL`, or the request's own origin ([`own_origin`]).
fn same_origin(req: &HttpRequest, config: &Config) -> bool {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let Some(origin) = header("origin").or_else(|| header("referer")) else {
        return false;
    };
    let Some(origin) = origin_of(origin) else {
        return false;
    };
    if origin_of(&config.public_url).is_some_and(|public| public == origin) {
        return true;
    }
    own_origin(req, config).is_some_and(|own| own == origin)
}

/// The serialised origin of a URL (`scheme://host[:port]`, the port only
/// when it is not the scheme's default); `None` for an opaque origin.
fn origin_of(url: &str) -> Option<String> {
    let origin = url::Url::parse(url).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// The origin the client addressed: the `Host` header (or HTTP/2's
/// authority) with the connection's scheme. The forwarded host and scheme
/// replace them only when `PUBLIC_URL` is unset (set, it names our public
/// origin, and nothing a request carries is needed) and the request comes
/// from a trusted proxy (`TRUSTED_PROXIES`), and only what that proxy wrote
/// itself ([`realtime_server::TrustedProxies::forwarded_origin`]): from
/// anyone else, or left over from an earlier hop, a page elsewhere could
/// name its own origin as ours.
fn own_origin(req: &HttpRequest, config: &Config) -> Option<String> {
    let forwarded = if config.public_url_given {
        realtime_server::client_address::ForwardedOrigin::default()
    } else {
        config
            .trusted_proxies
            .forwarded_origin(req.peer_addr().map(|a| a.ip()), req.headers())
    };
    let scheme = forwarded.proto.unwrap_or_else(|| {
        if req.app_config().secure() {
            "https".to_owned()
        } else {
            "http".to_owned()
        }
    });
    let host = forwarded
        .host
        .or_else(|| {
            req.headers()
                .get(actix_web::http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") || host.contains(['/', '@', '?', '#']) {
        return None;
    }
    origin_of(&format!("{scheme}://{host}"))
}

impl FromRequest for AuthUser {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(|| AppError::Internal("application state missing".into()))?;
            let (token, from_cookie) = match credential(&req) {
                Some(Credential::Bearer(token)) => (token, false),
                Some(Credential::Cookie(token)) => (token, true),
                None => return Err(AppError::Unauthorized),
            };
            if from_cookie && !same_origin(&req, &state.config) {
                return Err(AppError::Forbidden(
                    "cross-site request refused: Origin does not match this site".into(),
                ));
            }
            let token_hash = session::hash_token(&token);
            let lookup = token_hash.clone();
            let pool = state.pool.clone();
            let user = web::block(move || {
                let mut conn = pool.get()?;
                Ok::<_, AppError>(Session::user_of(&mut conn, &lookup, crate::models::now())?)
            })
            .await??;
            match user {
                Some(user) => Ok(AuthUser { user, token_hash }),
                None => Err(AppError::Unauthorized),
            }
        })
    }
}
