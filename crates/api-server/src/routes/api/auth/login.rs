//! `POST /api/auth/login`: `{email,password}` → `{token,user}` and the
//! session cookie.

use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::auth::rate_limit::LoginKeys;
use crate::auth::{password, session, SESSION_COOKIE};
use crate::error::AppError;
use crate::models::login_failure::LoginFailure;
use crate::models::session::{NewSession, Session};
use crate::models::user::{User, UserView};

/// The login form.
#[derive(Deserialize)]
pub struct LoginBody {
    email: String,
    password: String,
}

/// A wait as a 429, its `Retry-After` rounded up to whole seconds.
fn too_many(wait: Duration) -> AppError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    AppError::TooManyRequests {
        retry_after_secs: Some(secs.max(1)),
    }
}

/// Handles the request.
pub async fn handler(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<LoginBody>,
) -> Result<HttpResponse, AppError> {
    let LoginBody { email, password } = body.into_inner();
    let email = email.trim().to_lowercase();
    if email.is_empty() || password.is_empty() || email.len() > 320 || password.len() > 1024 {
        return Err(AppError::bad_request(
            "invalid_credentials_format",
            "email and password are required",
        ));
    }
    // The client address: the peer, or behind a trusted proxy the client
    // it names (TRUSTED_PROXIES); a forwarded header from anyone else is
    // ignored, so a client cannot pick the address it is counted under.
    let peer = req.peer_addr().map(|a| a.ip());
    let client = state
        .config
        .trusted_proxies
        .client_address(peer, req.headers());
    let keys = LoginKeys::new(client, &email);
    // Counted in flight before the stored failures are read (see
    // `LoginLimiter::reserve`); dropped, it is not counted.
    let attempt = state.login_limiter.reserve(&keys);

    // The limit's counters (shared by every instance) and the user are read
    // in one short call; no connection is held while the password is
    // verified (argon2, the slow part), and the verification waits its turn
    // for one of the verifier's low-priority threads.
    let now = crate::models::now();
    let (rows, stored_user) = state
        .db({
            let keys = keys.clone();
            move |conn| {
                Ok((
                    LoginFailure::read(conn, &keys.all(), now)?,
                    User::by_email(conn, &email)?,
                ))
            }
        })
        .await?;
    let counted = keys.stored(&rows);
    attempt.admit(&counted, now).map_err(too_many)?;
    let hash = stored_user.as_ref().map(|u| u.password_hash.clone());
    // An unknown email is verified against a dummy hash, so the answer
    // takes as long and says as little.
    let valid =
        state
            .login_verifier
            .verify(password, hash)
            .await
            .map_err(|refused| match refused {
                // The queue is full: come back in a moment.
                password::Refused::Busy => AppError::TooManyRequests {
                    retry_after_secs: Some(1),
                },
                // Queued, but no thread came free in time: the server is
                // overloaded, not the client too eager.
                password::Refused::TimedOut => AppError::Overloaded {
                    retry_after_secs: 1,
                },
            })?;
    let limiter_state = state.clone();
    let user = match stored_user.filter(|_| valid) {
        Some(user) => user,
        None => {
            // Recorded while the attempt is still in flight, so the next
            // attempt sees one or the other.
            state
                .write(move |conn| {
                    Ok(limiter_state.login_limiter.record_failure(
                        conn,
                        &keys,
                        crate::models::now(),
                    )?)
                })
                .await?;
            drop(attempt);
            return Err(AppError::InvalidCredentials);
        }
    };
    if counted.address_email.is_some() {
        state
            .write(move |conn| {
                Ok(limiter_state
                    .login_limiter
                    .record_success(conn, &keys, &counted)?)
            })
            .await?;
    }
    drop(attempt);

    let token = session::new_token();
    let token_hash = session::hash_token(&token);
    let user_id = user.id;
    state
        .write(move |conn| {
            let now = crate::models::now();
            Session::create(
                conn,
                &NewSession {
                    user_id,
                    token_hash: &token_hash,
                    expires_at: now + session::lifetime(),
                    created_at: now,
                },
            )?;
            Ok(())
        })
        .await?;
    let cookie = Cookie::build(SESSION_COOKIE, token.clone())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.config.secure_cookies())
        .max_age(actix_web::cookie::time::Duration::seconds(
            session::lifetime().num_seconds(),
        ))
        .finish();
    Ok(HttpResponse::Ok()
        .cookie(cookie)
        .json(json!({ "token": token, "user": UserView::from(&user) })))
}
