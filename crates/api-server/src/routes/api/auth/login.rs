//! `POST /api/auth/login`: `{email,password}` → `{token,user}` and the
//! session cookie.

use std::time::Instant;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::auth::{password, session, SESSION_COOKIE};
use crate::error::AppError;
use crate::models::session::{NewSession, Session};
use crate::models::user::{User, UserView};

/// The login form.
#[derive(Deserialize)]
pub struct LoginBody {
    email: String,
    password: String,
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
    let address = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    state
        .login_limiter
        .check(
            &[format!("ip:{address}"), format!("email:{email}")],
            Instant::now(),
        )
        .map_err(|wait| AppError::TooManyRequests {
            retry_after_secs: wait.as_secs().max(1),
        })?;

    let token = session::new_token();
    let token_hash = session::hash_token(&token);
    // The password check (argon2, the slow part) reads only; the session is
    // then written through the writer, which it must not hold up.
    let user = state
        .db(move |conn| {
            let user = User::by_email(conn, &email)?;
            // Verify against something even for an unknown email, so the
            // answer takes as long and says as little.
            let stored = user
                .as_ref()
                .map_or(password::dummy_hash(), |u| u.password_hash.as_str());
            let valid = password::verify(&password, stored);
            user.filter(|_| valid).ok_or(AppError::InvalidCredentials)
        })
        .await?;
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
