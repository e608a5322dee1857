//! Configuration from the environment (and `.env`, read once with dotenvy):
//! every variable of the contract, in one place.

use realtime_core::Config as PusherConfig;

/// Where realtime events go.
#[derive(Debug, Clone)]
pub enum RealtimeMode {
    /// Hosted Pusher, or a self-hosted compatible server (`PUSHER_HOST`).
    Pusher(Box<PusherConfig>),
    /// The embedded realtime server on api-server's own port.
    Embedded,
}

/// Twilio credentials; without them no SMS leaves the machine.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// `TWILIO_ACCOUNT_SID`.
    pub account_sid: String,
    /// `TWILIO_AUTH_TOKEN`.
    pub auth_token: realtime_core::Secret,
}

/// The application's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOST`.
    pub host: String,
    /// `PORT` (0 picks a free port, for tests).
    pub port: u16,
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `PUBLIC_URL`, without a trailing slash.
    pub public_url: String,
    /// Whether `PUBLIC_URL` was given (else it follows `HOST` and the bound port).
    pub public_url_given: bool,
    /// Hosted, self-hosted or embedded realtime.
    pub realtime: RealtimeMode,
    /// `PUSHER_ENCRYPTION_MASTER_KEY_BASE64`, for the embedded mode too.
    pub encryption_master_key_base64: Option<String>,
    /// Twilio, if configured.
    pub twilio: Option<TwilioConfig>,
    /// `TWILIO_API_BASE`.
    pub twilio_api_base: String,
    /// `PUSHER_JS_PATH`: pusher-js's browser build for the example page
    /// (default: the copy `scripts/dev` installs in `examples/inbox`).
    pub pusher_js_path: Option<String>,
}

/// A configuration mistake, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl Config {
    /// Reads `.env` (if present) and the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let host = get("HOST").unwrap_or_else(|| "127.0.0.1".into());
        let port = match get("PORT") {
            Some(port) => port.trim().parse().map_err(|_| ConfigError {
                variable: "PORT",
                message: format!("{port:?} is not a port number"),
            })?,
            None => 3000,
        };
        let database_url = get("DATABASE_URL").unwrap_or_else(|| "data/app.db".into());
        let public_url_given = get("PUBLIC_URL").is_some();
        let public_url = get("PUBLIC_URL")
            .unwrap_or_else(|| format!("http://{host}:{port}"))
            .trim_end_matches('/')
            .to_owned();
        url::Url::parse(&public_url).map_err(|e| ConfigError {
            variable: "PUBLIC_URL",
            message: format!("{public_url:?} is not a URL: {e}"),
        })?;
        let realtime = if PusherConfig::is_configured_in(&lookup) {
            let pusher = PusherConfig::from_lookup(&lookup).map_err(|e| ConfigError {
                variable: "PUSHER_*",
                message: e.to_string(),
            })?;
            RealtimeMode::Pusher(Box::new(pusher))
        } else {
            RealtimeMode::Embedded
        };
        let twilio = match (get("TWILIO_ACCOUNT_SID"), get("TWILIO_AUTH_TOKEN")) {
            (Some(account_sid), Some(token)) => Some(TwilioConfig {
                account_sid,
                auth_token: realtime_core::Secret::new(token),
            }),
            _ => None,
        };
        Ok(Config {
            host,
            port,
            database_url,
            public_url,
            public_url_given,
            realtime,
            encryption_master_key_base64: get("PUSHER_ENCRYPTION_MASTER_KEY_BASE64"),
            twilio,
            twilio_api_base: get("TWILIO_API_BASE")
                .unwrap_or_else(|| "https://api.twilio.com".into())
                .trim_end_matches('/')
                .to_owned(),
            pusher_js_path: get("PUSHER_JS_PATH"),
        })
    }

    /// Whether cookies must be `Secure` (the public URL is https).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}
