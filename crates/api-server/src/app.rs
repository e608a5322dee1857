//! The application: its state, its middleware, and the one list of routes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_web::dev::{Server as HttpServerHandle, Service, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::{web, App, HttpMessage, HttpRequest, HttpResponse, HttpServer};
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
use crate::slow_clients;
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
    /// The periodic clean-up of rows past their time.
    pub cleanup: crate::cleanup::Sweeper,
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

/// The routes, in one place (the Next app's `app/api/…/route.ts`). Each
/// path is one resource, so a method it does not take answers 405 with
/// `Allow` (a route's method guard alone would make it a 404).
pub fn routes(cfg: &mut web::ServiceConfig) {
    use web::resource;
    cfg.service(
        web::scope("/api")
            .service(resource("/auth/login").post(api::auth::login::handler))
            .service(resource("/auth/logout").post(api::auth::logout::handler))
            .service(resource("/auth/session").get(api::auth::session::handler))
            .service(resource("/me").get(api::me::handler))
            .service(
                resource("/contacts")
                    .get(api::contacts::list::handler)
                    .post(api::contacts::create::handler),
            )
            .service(resource("/contacts/{id}").get(api::contacts::show::handler))
            .service(resource("/contacts/{id}/messages").get(api::contacts::messages::handler))
            .service(resource("/contacts/{id}/notes").post(api::contacts::notes::handler))
            .service(resource("/contacts/{id}/viewers").get(api::contacts::viewers::handler))
            .service(resource("/messages/send").post(api::messages::send::handler))
            .service(resource("/messages/{id}/read").post(api::messages::read::handler))
            .service(resource("/team/members").get(api::team::members::handler))
            .service(resource("/pusher/auth").post(api::pusher::auth::handler))
            .service(resource("/pusher/user-auth").post(api::pusher::user_auth::handler))
            .service(resource("/webhooks/pusher").post(api::webhooks::pusher::handler))
            .service(resource("/webhooks/twilio").post(api::webhooks::twilio::handler))
            .service(
                resource("/webhooks/twilio/status").post(api::webhooks::twilio_status::handler),
            )
            .service(resource("/realtime/config").get(api::realtime::config::handler))
            .service(resource("/health").get(api::health::handler))
            .default_service(web::to(unmatched)),
    )
    .service(resource("/metrics").get(metrics))
    .configure(crate::routes::page::routes)
    .default_service(web::to(unmatched));
}

/// Marks a request that no route matched (its metrics' `route` label).
#[derive(Debug, Clone, Copy)]
struct Unmatched;

async fn unmatched(req: HttpRequest) -> Result<HttpResponse, AppError> {
    req.extensions_mut().insert(Unmatched);
    Err(AppError::NotFound("route"))
}

async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    if let Some(token) = &state.config.metrics_token {
        if !crate::auth::bearer_matches(&req, token) {
            return Err(AppError::Unauthorized);
        }
    }
    let ((depth, oldest), sms_queued) = state
        .db(|conn| {
            Ok((
                OutboxRow::depth(conn)?,
                crate::models::sms_outbox::SmsJob::depth(conn)?,
            ))
        })
        .await?;
    state.metrics.outbox_depth.set(depth);
    state.metrics.sms_queued.set(sms_queued);
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

/// The client's `X-Request-Id` when it is 1 to 64 characters of
/// `[A-Za-z0-9._-]` (safe in a log line and a header); else a new one.
pub fn request_id(given: Option<&str>) -> String {
    given
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()))
}

/// Routes of the embedded realtime server, which answer in the Pusher
/// protocol's own words (plain text), as the standalone server does.
fn is_realtime_path(path: &str) -> bool {
    path.starts_with("/app/") || path.starts_with("/apps/")
}

/// Gives an error answer that is not JSON already (actix's own 404, 405,
/// 413 and other extractor failures) the contract's shape
/// `{"error":{"code","message"}}`, keeping its status and headers (`Allow`).
fn in_contract_shape(res: ServiceResponse) -> ServiceResponse {
    // A raw body (webhooks, channel authorization) read past its deadline
    // fails as a payload error, which actix answers 400; it is the client's
    // slowness, as JSON and form bodies already say with 408.
    let body_too_slow = res
        .response()
        .error()
        .and_then(|e| e.as_error::<actix_web::error::PayloadError>())
        .is_some_and(slow_clients::is_body_timeout);
    let status = if body_too_slow {
        actix_web::http::StatusCode::REQUEST_TIMEOUT
    } else {
        res.status()
    };
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json && !body_too_slow {
        return res;
    }
    let (req, old) = res.into_parts();
    let mut new = error::response_for_status(status);
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.headers_mut().append(name.clone(), value.clone());
        }
    }
    ServiceResponse::new(req, new)
}

/// Which listener a request came in on, when `/metrics` has its own
/// (`METRICS_ADDR`): that one serves `/metrics` alone, and the main one
/// everything but `/metrics`.
fn listener_refuses(req: &ServiceRequest, metrics_listener: Option<SocketAddr>) -> bool {
    let Some(metrics_listener) = metrics_listener else {
        return false;
    };
    let on_metrics_listener = req.app_config().local_addr() == metrics_listener;
    on_metrics_listener != (req.path() == "/metrics")
}

/// Builds the HTTP server on `listener`; the embedded realtime server, when
/// there is one, is mounted on the same port. With `METRICS_ADDR` set, a
/// second listener there serves `/metrics` alone.
pub fn http_server(
    state: web::Data<AppState>,
    listener: std::net::TcpListener,
) -> std::io::Result<HttpServerHandle> {
    let embedded = state.realtime.embedded_server();
    let metrics_listener = match &state.config.metrics_addr {
        Some(addr) => Some(slow_clients::listen(addr.as_str()).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on METRICS_ADDR {addr}: {e}"),
            )
        })?),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(std::net::TcpListener::local_addr)
        .transpose()?;
    let realtime_mounted = embedded.is_some();
    // As many workers as actix would start by itself, stated, so that the
    // connections they may hold together fit the descriptor limit.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let descriptor_limit = slow_clients::descriptor_limit();
    let per_worker = slow_clients::connections_per_worker(descriptor_limit, workers);
    if per_worker < slow_clients::MAX_CONNECTIONS_PER_WORKER {
        tracing::info!(
            descriptor_limit,
            workers,
            connections_per_worker = per_worker,
            "the descriptor limit caps connections (raise `ulimit -n` / LimitNOFILE for more)"
        );
    }
    let server = HttpServer::new(move || {
        let state = state.clone();
        let metrics = state.metrics.clone();
        let mut app = App::new()
            .app_data(state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(error::BODY_LIMIT)
                    .error_handler(error::json_error_handler),
            )
            .app_data(
                web::FormConfig::default()
                    .limit(error::BODY_LIMIT)
                    .error_handler(error::form_error_handler),
            )
            // Raw bodies (webhooks, channel authorization); the embedded
            // realtime server's HTTP API sets its own on its scope.
            .app_data(web::PayloadConfig::new(error::RAW_BODY_LIMIT))
            .app_data(web::QueryConfig::default().error_handler(error::query_error_handler))
            .app_data(web::PathConfig::default().error_handler(error::path_error_handler))
            .wrap_fn(move |mut req, srv| {
                let started = Instant::now();
                let id = request_id(
                    req.headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok()),
                );
                req.extensions_mut().insert(RequestId(id.clone()));
                let method = req.method().clone();
                let path = req.path().to_owned();
                let metrics = metrics.clone();
                let span = tracing::info_span!(
                    "request",
                    request_id = %id,
                    method = crate::metrics::method_label(&method),
                    %path
                );
                let in_flight = slow_clients::InFlight::start(&req);
                slow_clients::limit_body_time(&mut req);
                let call = if listener_refuses(&req, metrics_addr) {
                    Err(req)
                } else {
                    Ok(srv.call(req))
                };
                // Instrumented, not entered: a span entered across an await
                // would be the current one for other requests on this thread.
                async move {
                    let res = match call {
                        Ok(fut) => fut.await?,
                        Err(req) => {
                            req.extensions_mut().insert(Unmatched);
                            req.into_response(error::response_for_status(
                                actix_web::http::StatusCode::NOT_FOUND,
                            ))
                        }
                    };
                    let mut res = if realtime_mounted && is_realtime_path(&path) {
                        res
                    } else {
                        in_contract_shape(res)
                    };
                    let status = res.status().as_u16();
                    let route = match res.request().extensions().get::<Unmatched>() {
                        Some(_) => None,
                        None => res.request().match_pattern(),
                    };
                    metrics.record_request(&method, route.as_deref(), status);
                    if let Ok(value) = header::HeaderValue::from_str(&id) {
                        res.headers_mut()
                            .insert(header::HeaderName::from_static("x-request-id"), value);
                    }
                    tracing::info!(
                        status,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "handled"
                    );
                    // The request stays in flight for the watchdog until its
                    // body has been written, not only until its head is ready.
                    Ok(in_flight.hold(res))
                }
                .instrument(span)
            })
            .configure(routes);
        if let Some(embedded) = embedded.clone() {
            app = app.configure(realtime_server::Server::configure(embedded));
        }
        app
    })
    .on_connect(slow_clients::on_connect)
    .client_request_timeout(slow_clients::HEADER_TIMEOUT)
    .client_disconnect_timeout(slow_clients::DISCONNECT_TIMEOUT)
    .keep_alive(slow_clients::KEEP_ALIVE)
    .workers(workers)
    .max_connections(per_worker)
    .listen(listener)?;
    let server = match metrics_listener {
        Some(metrics_listener) => server.listen(metrics_listener)?,
        None => server,
    };
    Ok(server.shutdown_timeout(10).disable_signals().run())
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
    let listener = slow_clients::listen((config.host.as_str(), config.port))
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
        cleanup: crate::cleanup::Sweeper::new(),
        config,
    });
    state.cleanup.start(&state);
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
    state.cleanup.stop();
    let for_sms = state.clone();
    let _ = web::block(move || for_sms.sms.shutdown(Duration::from_secs(10))).await;
    state.realtime.shutdown(Duration::from_secs(5)).await;
    let for_drain = state.clone();
    let _ = web::block(move || for_drain.dispatcher.shutdown(Duration::from_secs(10))).await;
    running_handle.stop(true).await;
}
