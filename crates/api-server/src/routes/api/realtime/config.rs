//! `GET /api/realtime/config` → the options object for
//! `new Pusher(key, options)`, plus `key`, in every mode.

use actix_web::{web, HttpResponse};

use crate::app::AppState;

/// Handles the request.
pub async fn handler(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(&state.realtime.client_options)
}
