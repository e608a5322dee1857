//! The example inbox page at `/`: served from the binary with its security
//! headers, pusher-js from `PUSHER_JS_PATH` (or a clear 404 without it). The
//! page's behaviour in a browser is tested by `tests/compat`'s browser test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{spawn_with, Backend, Options};

fn header<'a>(resp: &'a common::Resp, name: &str) -> &'a str {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[actix_web::test]
async fn the_page_and_its_assets_are_served_without_a_session() {
    let app = spawn_with(Options::embedded(Backend::Sqlite)).await;
    let page = app.get_anon("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert!(page.text.contains(r#"<form data-testid="login""#));
    // It loads scripts from its own origin only (pusher-js included).
    assert!(page
        .text
        .contains(r#"<script src="/vendor/pusher.min.js">"#));
    let csp = header(&page, "content-security-policy");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(
        !csp.contains("script-src"),
        "scripts fall back to 'self': {csp}"
    );
    assert_eq!(header(&page, "x-frame-options"), "DENY");

    let script = app.get_anon("/inbox/app.js").await;
    assert_eq!(script.status, 200);
    assert_eq!(
        header(&script, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert!(script.text.contains("/api/realtime/config"));
    let style = app.get_anon("/inbox/style.css").await;
    assert_eq!(style.status, 200);
    assert_eq!(header(&style, "content-type"), "text/css; charset=utf-8");
}

#[actix_web::test]
async fn pusher_js_is_served_from_pusher_js_path() {
    let dir = tempfile_dir("pusher-js-served");
    let file = dir.join("pusher.min.js");
    std::fs::write(&file, "/* pinned pusher-js */").unwrap();
    let mut options = Options::embedded(Backend::Sqlite);
    options
        .extra
        .push(("PUSHER_JS_PATH".into(), file.display().to_string()));
    let app = spawn_with(options).await;
    let script = app.get_anon("/vendor/pusher.min.js").await;
    assert_eq!(script.status, 200);
    assert_eq!(script.text, "/* pinned pusher-js */");
    assert_eq!(
        header(&script, "content-type"),
        "text/javascript; charset=utf-8"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[actix_web::test]
async fn without_pusher_js_the_script_is_a_clear_404_and_the_api_works() {
    let mut options = Options::embedded(Backend::Sqlite);
    options
        .extra
        .push(("PUSHER_JS_PATH".into(), "/nonexistent/pusher.min.js".into()));
    let app = spawn_with(options).await;
    let script = app.get_anon("/vendor/pusher.min.js").await;
    assert_eq!(script.status, 404);
    assert_eq!(script.error_code(), "not_found");
    assert!(script.text.contains("scripts/dev"), "{}", script.text);
    assert_eq!(app.get_anon("/").await.status, 200);
    assert_eq!(app.get_anon("/api/health").await.status, 200);
}

fn tempfile_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(common::unique(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
