//! The application: its state, its middleware, and the one list of routes.

use std::time::{Duration, Instant};

use actix_web::dev::{Server as HttpServerHandle, Service};
use actix_web::{web, App, HttpMessage, HttpResponse, HttpServer};
use tracing::Instrument;

use crate::auth::password::Verifier;
use crate::auth::rate_limit::LoginLimiter;
use crate::config::Config;
use crate::db::writer::Writer;
use crate::db::{Backend, DbConnection, DbPool};
use crate::error::{self, AppError};
use crate::metrics::AppMetrics;
use crate::models::outbox::OutboxRow;
use crate::realtime::dispatcher::Dispatcher;
use crate::realtime::Realtime;
use crate::routes::api;
use crate::twilio::client::TwilioClient;
use crate::twilio::delivery::SmsWorker;

/// What every handler can reach.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// The database pool.
    pub pool: DbPool,
    /// SQLite's one writer (none on PostgreSQL, where the pool writes).
    pub writer: Option<Writer>,
    /// Realtime: publisher, credentials, viewers, pusher-js options.
    pub realtime: Realtime,
    /// Publishes the outbox.
    pub dispatcher: Dispatcher,
    /// Failed logins, per client address and per address + email.
    pub login_limiter: LoginLimiter,
    /// Verifies logins' passwords, a few at a time, off the async workers.
    pub login_verifier: Verifier,
    /// Twilio's Messages API, when credentials are configured.
    pub twilio: Option<TwilioClient>,
    /// Sends the queued outbound SMS (running only when Twilio is configured).
    pub sms: SmsWorker,
    /// Metrics.
    pub metrics: AppMetrics,
    /// pusher-js for the example page, when it is installed.
    pub pusher_js: Option<web::Bytes>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("realtime", &self.realtime)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Runs blocking diesel work on the blocking thread pool with a pooled
    /// connection.
    pub async fn db<T, F>(&self, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        web::block(move || {
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await?
    }

    /// Runs diesel work that writes. On SQLite it goes to the process's one
    /// [`Writer`], which commits it with the writes queued beside it, each in
    /// its own savepoint; on PostgreSQL it runs like [`AppState::db`]. Either
    /// way `f` opens a [`crate::db::write_transaction`] where its statements
    /// must stand or fall together on both backends.
    pub async fn write<T, F>(&self, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        match &self.writer {
            Some(writer) => writer.run(f).await,
            None => self.db(f).await,
        }
    }
}

/// The routes, in one place (the Next app's `app/api/…/route.ts`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api")
            .route("/auth/login", web::post().to(api::auth::login::handler))
            .route("/auth/logout", web::post().to(api::auth::logout::handler))
            .route("/me", web::get().to(api::me::handler))
            .route("/contacts", web::get().to(api::contacts::list::handler))
            .route("/contacts", web::post().to(api::contacts::create::handler))
            .route(
                "/contacts/{id}",
                web::get().to(api::contacts::show::handler),
            )
            .route(
                "/contacts/{id}/messages",
                web::get().to(api::contacts::messages::handler),
            )
            .route(
                "/contacts/{id}/notes",
                web::post().to(api::contacts::notes::handler),
            )
            .route(
                "/contacts/{id}/viewers",
                web::get().to(api::contacts::viewers::handler),
            )
            .route(
                "/messages/send",
                web::post().to(api::messages::send::handler),
            )
            .route(
                "/messages/{id}/read",
                web::post().to(api::messages::read::handler),
            )
            .route("/pusher/auth", web::post().to(api::pusher::auth::handler))
            .route(
                "/pusher/user-auth",
                web::post().to(api::pusher::user_auth::handler),
            )
            .route(
                "/webhooks/pusher",
                web::post().to(api::webhooks::pusher::handler),
            )
            .route(
                "/webhooks/twilio",
                web::post().to(api::webhooks::twilio::handler),
            )
            .route(
                "/webhooks/twilio/status",
                web::post().to(api::webhooks::twilio_status::handler),
            )
            .route(
                "/realtime/config",
                web::get().to(api::realtime::config::handler),
            )
            .route("/health", web::get().to(api::health::handler))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(AppError::NotFound("route"))
            })),
    )
    .route("/metrics", web::get().to(metrics))
    .configure(crate::routes::page::routes);
}

async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let (depth, oldest) = state.db(|conn| Ok(OutboxRow::depth(conn)?)).await?;
    state.metrics.outbox_depth.set(depth);
    let age = oldest.map_or(0, |t| (crate::models::now() - t).num_seconds().max(0));
    state.metrics.outbox_oldest_age.set(age);
    let mut text = state.metrics.render();
    if let Some(server) = state.realtime.embedded_server() {
        text.push_str(&server.metrics().render());
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text))
}

/// A request id, for logs and the `X-Request-Id` header.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Builds the HTTP server on `listener`; the embedded realtime server, when
/// there is one, is mounted on the same port.
pub fn http_server(
    state: web::Data<AppState>,
    listener: std::net::TcpListener,
) -> std::io::Result<HttpServerHandle> {
    let embedded = state.realtime.embedded_server();
    let server = HttpServer::new(move || {
        let state = state.clone();
        let metrics = state.metrics.clone();
        let mut app = App::new()
            .app_data(state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(64 * 1024)
                    .error_handler(error::json_error_handler),
            )
            .app_data(
                web::FormConfig::default()
                    .limit(64 * 1024)
                    .error_handler(error::form_error_handler),
            )
            .app_data(web::QueryConfig::default().error_handler(error::query_error_handler))
            .app_data(web::PathConfig::default().error_handler(error::path_error_handler))
            .wrap_fn(move |req, srv| {
                let started = Instant::now();
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| v.len() <= 64)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
                req.extensions_mut().insert(RequestId(id.clone()));
                let method = req.method().to_string();
                let path = req.path().to_owned();
                let metrics = metrics.clone();
                let span = tracing::info_span!("request", request_id = %id, %method, %path);
                let fut = srv.call(req);
                // Instrumented, not entered: a span entered across an await
                // would be the current one for other requests on this thread.
                async move {
                    let mut res = fut.await?;
                    let status = res.status().as_u16();
                    metrics
                        .requests
                        .with_label_values(&[&method, &status.to_string()])
                        .inc();
                    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id) {
                        res.headers_mut().insert(
                            actix_web::http::header::HeaderName::from_static("x-request-id"),
                            value,
                        );
                    }
                    tracing::info!(
                        status,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "handled"
                    );
                    Ok(res)
                }
                .instrument(span)
            })
            .configure(routes);
        if let Some(embedded) = embedded.clone() {
            app = app.configure(realtime_server::Server::configure(embedded));
        }
        app
    })
    .listen(listener)?
    .shutdown_timeout(10)
    .disable_signals()
    .run();
    Ok(server)
}

/// Everything `serve` starts, so tests can start it too.
pub struct Running {
    /// The HTTP server (await it to run).
    pub server: HttpServerHandle,
    /// The state.
    pub state: web::Data<AppState>,
    /// The bound port.
    pub port: u16,
}

/// Migrates, builds the state, starts the dispatcher and binds the port.
pub fn build(mut config: Config) -> Result<Running, String> {
    crate::db::migrate(&config.database_url).map_err(|e| e.to_string())?;
    let pool = crate::db::pool(&config.database_url).map_err(|e| e.to_string())?;
    let writer = match Backend::of(&config.database_url) {
        Backend::Sqlite => Some(Writer::start(&config.database_url).map_err(|e| e.to_string())?),
        Backend::Postgres => None,
    };
    let listener = std::net::TcpListener::bind((config.host.as_str(), config.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", config.host, config.port))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    if !config.public_url_given {
        // With PORT=0 the port is known only now; clients must get the real one.
        config.public_url = format!("http://{}:{port}", config.host);
    }
    let realtime = Realtime::start(&config, &pool)?;
    let metrics = AppMetrics::new();
    let dispatcher = Dispatcher::start(
        pool.clone(),
        writer.clone(),
        realtime.publisher.clone(),
        metrics.clone(),
    )
    .map_err(|e| format!("cannot start the outbox dispatcher: {e}"))?;
    let state = web::Data::new(AppState {
        pool,
        writer,
        realtime,
        dispatcher,
        login_limiter: LoginLimiter::default(),
        login_verifier: Verifier::default(),
        twilio: config.twilio.clone().map(|t| {
            TwilioClient::new(
                t,
                &config.twilio_api_base,
                &config.public_url,
                config.twilio_send.timeout,
            )
        }),
        sms: SmsWorker::new(),
        metrics,
        pusher_js: crate::routes::page::load_pusher_js(config.pusher_js_path.as_deref()),
        config,
    });
    // Events left from a previous run go out now.
    state.dispatcher.wake();
    // So do the SMS left queued (after their lease, if a run died holding them).
    if state.twilio.is_some() {
        state
            .sms
            .start(&state.clone().into_inner())
            .map_err(|e| format!("cannot start the SMS worker: {e}"))?;
    }
    let server = http_server(state.clone(), listener).map_err(|e| e.to_string())?;
    Ok(Running {
        server,
        state,
        port,
    })
}

/// Graceful shutdown: the SMS under way handed to Twilio (new ones stay
/// queued), clients told to reconnect, the outbox drained, then the HTTP
/// server stopped.
pub async fn shutdown(running_handle: actix_web::dev::ServerHandle, state: web::Data<AppState>) {
    let for_sms = state.clone();
    let _ = web::block(move || for_sms.sms.shutdown(Duration::from_secs(10))).await;
    state.realtime.shutdown(Duration::from_secs(5)).await;
    let for_drain = state.clone();
    let _ = web::block(move || for_drain.dispatcher.shutdown(Duration::from_secs(10))).await;
    running_handle.stop(true).await;
}
