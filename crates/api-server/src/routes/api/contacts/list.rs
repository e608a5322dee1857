//! `GET /api/contacts?limit=&before=` →
//! `{contacts:[{id,name,phone,unreadCount,lastMessage}],nextBefore}`: most
//! recently active first, `limit` (default 50, at most 200) per page;
//! `nextBefore` (absent on the last page) is the opaque cursor to pass back
//! as `before` for the next page.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::models::contact::{ActivityCursor, Contact};

/// Contacts per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: i64 = 50;
/// The largest `limit`.
pub const MAX_LIMIT: i64 = 200;

/// Paging parameters.
#[derive(Deserialize)]
pub struct Page {
    limit: Option<String>,
    before: Option<String>,
}

/// Handles the request.
pub async fn handler(
    state: web::Data<AppState>,
    auth: AuthUser,
    page: web::Query<Page>,
) -> Result<HttpResponse, AppError> {
    let limit = match page.limit.as_deref() {
        None | Some("") => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                AppError::bad_request(
                    "invalid_limit",
                    format!("limit must be a number from 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    let before = match page.before.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(ActivityCursor::parse(raw).ok_or_else(|| {
            AppError::bad_request(
                "invalid_before",
                "before must be a nextBefore value from an earlier page",
            )
        })?),
    };
    let team_id = auth.team_id();
    let page = state
        .db(move |conn| {
            Ok(Contact::page_of_team(
                conn,
                team_id,
                before.as_ref(),
                limit,
            )?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(page))
}
