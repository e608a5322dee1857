//! The example inbox page (`examples/inbox`) at `/`: its HTML, script and
//! stylesheet are compiled into the binary; pusher-js is the pinned copy that
//! `scripts/dev` installs from npm, read from disk once at start-up and
//! served at `/vendor/pusher.min.js`, so the page loads nothing from the
//! internet.

use std::path::{Path, PathBuf};

use actix_web::http::header::{self, CacheDirective, HeaderValue};
use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::error::AppError;

const INDEX_HTML: &str = include_str!("../../../../examples/inbox/index.html");
const APP_JS: &str = include_str!("../../../../examples/inbox/app.js");
const STYLE_CSS: &str = include_str!("../../../../examples/inbox/style.css");

/// Where `npm install` in `examples/inbox` puts pusher-js's browser build.
const PUSHER_JS_IN_EXAMPLE: &str = "examples/inbox/node_modules/pusher-js/dist/web/pusher.min.js";

/// pusher-js may open WebSockets to another host (hosted Pusher, a
/// self-hosted server), so `connect-src` allows them; everything else is
/// this origin only.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; connect-src 'self' ws: wss: http: https:; \
     img-src 'self' data: https:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The page's routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/inbox/app.js", web::get().to(app_js))
        .route("/inbox/style.css", web::get().to(style_css))
        .route("/vendor/pusher.min.js", web::get().to(pusher_js));
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // Small, and changed by a rebuild: always revalidated.
        .insert_header(header::CacheControl(vec![CacheDirective::NoCache]))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

async fn index() -> HttpResponse {
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn pusher_js(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let Some(script) = &state.pusher_js else {
        return Err(AppError::NotFound(
            "pusher-js (run scripts/dev, or set PUSHER_JS_PATH)",
        ));
    };
    Ok(HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(header::CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(3600),
        ]))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(script.clone()))
}

/// Reads pusher-js for the page: `PUSHER_JS_PATH` when set, else the copy
/// installed in `examples/inbox` (looked up from the working directory, then
/// from this source tree). `None`, with a warning that says what to run,
/// when there is none: the API works without it, the page says realtime is
/// unavailable.
pub fn load_pusher_js(configured: Option<&str>) -> Option<web::Bytes> {
    let candidates: Vec<PathBuf> = match configured {
        Some(path) => vec![PathBuf::from(path)],
        None => vec![
            PathBuf::from(PUSHER_JS_IN_EXAMPLE),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(PUSHER_JS_IN_EXAMPLE),
        ],
    };
    for path in &candidates {
        match std::fs::read(path) {
            Ok(bytes) => {
                tracing::debug!(path = %path.display(), "serving pusher-js for the example page");
                return Some(web::Bytes::from(bytes));
            }
            Err(e) if configured.is_some() => {
                tracing::warn!(path = %path.display(), error = %e, "PUSHER_JS_PATH cannot be read: the example page will say realtime is unavailable");
                return None;
            }
            Err(_) => continue,
        }
    }
    tracing::warn!("pusher-js is not installed for the example page at /: run scripts/dev (or `npm ci` in examples/inbox), or set PUSHER_JS_PATH");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_carries_the_contract_test_ids() {
        for needle in [
            r#"form data-testid="login""#,
            r#"name="email""#,
            r#"name="password""#,
            r#"type="submit""#,
            r#"data-testid="composer""#,
            r#"data-testid="send""#,
        ] {
            assert!(INDEX_HTML.contains(needle), "index.html lacks {needle}");
        }
        for needle in [
            "'contact'",
            "'unread'",
            "'message'",
            "'mark-read'",
            "'viewer'",
        ] {
            assert!(APP_JS.contains(needle), "app.js lacks {needle}");
        }
    }

    #[test]
    fn a_configured_path_that_does_not_exist_serves_nothing() {
        assert!(load_pusher_js(Some("/nonexistent/pusher.min.js")).is_none());
    }

    #[test]
    fn a_configured_path_is_read() {
        let dir = std::env::temp_dir().join(format!("pusher-js-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pusher.min.js");
        std::fs::write(&file, "/* pusher */").unwrap();
        let bytes = load_pusher_js(file.to_str()).unwrap();
        assert_eq!(&bytes[..], b"/* pusher */");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
