//! `GET /api/contacts?limit=&before=` →
//! `{contacts:[{id,name,phone,unreadCount,lastMessage}],nextBefore}`: most
//! recently active first, `limit` (default 50, at most 200) per page;
//! `nextBefore` (absent on the last page) is the opaque cursor to pass back
//! as `before` for the next page.

use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::models::contact::{ActivityCursor, Contact};
use crate::routes::api::Page;

/// Contacts per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: i64 = 50;
/// The largest `limit`.
pub const MAX_LIMIT: i64 = 200;

/// Handles the request.
pub async fn handler(
    state: web::Data<AppState>,
    auth: AuthUser,
    page: web::Query<Page>,
) -> Result<HttpResponse, AppError> {
    let limit = page.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let before = page.before(
        ActivityCursor::parse,
        "a nextBefore value from an earlier page",
    )?;
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
