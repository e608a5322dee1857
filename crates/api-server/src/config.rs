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
    /// `TWILIO_SEND_ATTEMPTS`, `TWILIO_RETRY_BASE_MS`, `TWILIO_RETRY_MAX_MS`,
    /// `TWILIO_TIMEOUT_MS`: how outbound SMS are tried.
    pub twilio_send: crate::twilio::delivery::SendSettings,
    /// `PUSHER_JS_PATH`: pusher-js's browser build for the example page
    /// (default: the copy `scripts/dev` installs in `examples/inbox`).
    pub pusher_js_path: Option<String>,
    /// `TRUSTED_PROXIES`: the proxies whose `Forwarded` / `X-Forwarded-For`
    /// name the client (and whose forwarded host and scheme are believed).
    /// Empty: the client is the peer address, and forwarded headers are
    /// ignored.
    pub trusted_proxies: realtime_server::TrustedProxies,
    /// `METRICS_TOKEN`: the bearer token `/metrics` requires, when set.
    pub metrics_token: Option<realtime_core::Secret>,
    /// `METRICS_ADDR`: a separate address (`host:port`) serving `/metrics`
    /// alone; the main port then has no `/metrics`.
    pub metrics_addr: Option<String>,
    /// `REALTIME_PUBLIC_CHANNELS`: whether the embedded realtime server
    /// accepts public channels (the inbox uses none; off by default).
    pub embedded_public_channels: bool,
    /// `REALTIME_MAX_CHANNELS_PER_CONNECTION`: the embedded server's cap on one
    /// connection's channels (unset: realtime-server's default).
    pub realtime_max_channels_per_connection: Option<usize>,
    /// `REALTIME_MAX_CONNECTIONS_PER_ADDRESS`: the embedded server's cap on
    /// one client address's open connections (unset: realtime-server's default).
    pub realtime_max_connections_per_address: Option<usize>,
    /// `REALTIME_CLUSTER_URL`: the bus (`redis://…` or `nats://…`) whose
    /// cluster the embedded server joins, so that several api-server
    /// instances are one realtime service.
    pub realtime_cluster_url: Option<String>,
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
        let trusted_proxies = match get("TRUSTED_PROXIES") {
            Some(list) => {
                realtime_server::TrustedProxies::parse(&list).map_err(|message| ConfigError {
                    variable: "TRUSTED_PROXIES",
                    message,
                })?
            }
            None => realtime_server::TrustedProxies::none(),
        };
        let metrics_addr = get("METRICS_ADDR").map(|a| a.trim().to_owned());
        if let Some(addr) = &metrics_addr {
            addr.parse::<std::net::SocketAddr>()
                .map_err(|e| ConfigError {
                    variable: "METRICS_ADDR",
                    message: format!("{addr:?} is not an address such as 127.0.0.1:9100: {e}"),
                })?;
        }
        let count = |variable: &'static str| -> Result<Option<usize>, ConfigError> {
            get(variable)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| ConfigError {
                            variable,
                            message: format!("{v:?} is not a positive whole number"),
                        })
                })
                .transpose()
        };
        let embedded_public_channels = match get("REALTIME_PUBLIC_CHANNELS") {
            Some(v) => parse_bool(&v).ok_or_else(|| ConfigError {
                variable: "REALTIME_PUBLIC_CHANNELS",
                message: format!("{v:?} is not true or false"),
            })?,
            None => false,
        };
        Ok(Config {
            trusted_proxies,
            metrics_token: get("METRICS_TOKEN")
                .map(|t| realtime_core::Secret::new(t.trim().to_owned())),
            metrics_addr,
            embedded_public_channels,
            realtime_max_channels_per_connection: count("REALTIME_MAX_CHANNELS_PER_CONNECTION")?,
            realtime_max_connections_per_address: count("REALTIME_MAX_CONNECTIONS_PER_ADDRESS")?,
            realtime_cluster_url: match get("REALTIME_CLUSTER_URL") {
                Some(url) => {
                    realtime_server::cluster::bus::from_url(&url).map_err(|e| ConfigError {
                        variable: "REALTIME_CLUSTER_URL",
                        message: e.to_string(),
                    })?;
                    Some(url)
                }
                None => None,
            },
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
            twilio_send: crate::twilio::delivery::SendSettings::from_lookup(get)?,
        })
    }

    /// Whether cookies must be `Secure` (the public URL is https).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn trusted_proxies_take_cidrs_and_single_addresses() {
        let config = config(&[("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1 ::1")]).unwrap();
        let trusted = &config.trusted_proxies;
        assert!(trusted.contains("10.1.2.3".parse().unwrap()));
        assert!(trusted.contains("127.0.0.1".parse().unwrap()));
        assert!(trusted.contains("::1".parse().unwrap()));
        assert!(!trusted.contains("192.168.0.1".parse().unwrap()));
    }

    #[test]
    fn nothing_is_trusted_by_default() {
        let config = config(&[]).unwrap();
        assert!(config.trusted_proxies.is_empty());
        assert!(!config
            .trusted_proxies
            .contains("127.0.0.1".parse().unwrap()));
        assert!(!config.embedded_public_channels);
        assert!(config.metrics_token.is_none());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (variable, value) in [
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("TRUSTED_PROXIES", "proxy.example"),
            ("METRICS_ADDR", "nine thousand"),
            ("REALTIME_PUBLIC_CHANNELS", "maybe"),
            ("REALTIME_MAX_CHANNELS_PER_CONNECTION", "0"),
            ("REALTIME_MAX_CONNECTIONS_PER_ADDRESS", "-3"),
            ("REALTIME_CLUSTER_URL", "http://bus:1"),
        ] {
            let error = config(&[(variable, value)]).unwrap_err();
            assert_eq!(error.variable, variable, "{value}");
        }
    }
}
