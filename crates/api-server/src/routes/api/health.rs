//! `GET /api/health` → `{status,database,realtime}`.

use actix_web::{web, HttpResponse};
use diesel::connection::SimpleConnection;
use serde_json::json;

use crate::app::AppState;

/// Handles the request: 200 when the database answers, 503 when not.
pub async fn handler(state: web::Data<AppState>) -> HttpResponse {
    let database = state
        .db(|conn| Ok(conn.batch_execute("SELECT 1")?))
        .await
        .is_ok();
    let body = json!({
        "status": if database { "ok" } else { "degraded" },
        "database": if database { "ok" } else { "unavailable" },
        "realtime": state.realtime.mode(),
    });
    if database {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
