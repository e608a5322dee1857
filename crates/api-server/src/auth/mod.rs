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

fn credential(req: &HttpRequest) -> Option<Credential> {
    if let Some(header) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
        {
            return Some(Credential::Bearer(token.trim().to_owned()));
        }
    }
    req.cookie(SESSION_COOKIE)
        .map(|c| Credential::Cookie(c.value().to_owned()))
}

/// Whether a cookie-authenticated request may change state: safe methods
/// always; others only when `Origin` (or `Referer`) is this site.
fn same_origin(req: &HttpRequest, public_url: &str) -> bool {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let Some(origin) = header("origin").or_else(|| header("referer")) else {
        return false;
    };
    let Ok(origin) = url::Url::parse(origin) else {
        return false;
    };
    let origin = origin.origin().ascii_serialization();
    let public = url::Url::parse(public_url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let info = req.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    origin == public || origin == own
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
            if from_cookie && !same_origin(&req, &state.config.public_url) {
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
