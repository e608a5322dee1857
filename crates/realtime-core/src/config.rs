//! Configuration: an app's credentials, and where and how to reach its HTTP
//! API. Built by parts, from one URL, or from the `PUSHER_*` environment.

use std::time::Duration;

use url::Url;

use crate::channel::DEFAULT_MAX_DATA_BYTES;
use crate::crypto::MasterKey;
use crate::error::ConfigError;
use crate::retry::RetryPolicy;
use crate::signing::{Secret, Signer};

/// Default time to wait for the HTTP API's answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pusher's default cluster.
pub const DEFAULT_CLUSTER: &str = "mt1";

/// An app's identity and secret: all that signing and authorization need.
/// `Debug` never prints the secret or the master key.
#[derive(Clone, Debug)]
pub struct Credentials {
    app_id: String,
    key: String,
    secret: Secret,
    signer: Signer,
    encryption_master_key: Option<MasterKey>,
}

impl Credentials {
    /// Credentials of the app `app_id` with its `key` and `secret`.
    pub fn new(
        app_id: impl Into<String>,
        key: impl Into<String>,
        secret: impl Into<Secret>,
    ) -> Self {
        let secret = secret.into();
        Credentials {
            app_id: app_id.into(),
            key: key.into(),
            signer: Signer::new(&secret),
            secret,
            encryption_master_key: None,
        }
    }

    /// Adds the master key that encrypted channels need.
    pub fn with_encryption_master_key(mut self, key: MasterKey) -> Self {
        self.encryption_master_key = Some(key);
        self
    }

    /// The app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The app key (public: clients know it).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The app secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The signer prepared for this app's secret.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The encryption master key, if configured.
    pub fn encryption_master_key(&self) -> Option<&MasterKey> {
        self.encryption_master_key.as_ref()
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (a local or self-hosted server).
    Http,
    /// HTTPS (hosted Pusher).
    Https,
}

impl Scheme {
    /// Parses `http` or `https`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.to_ascii_lowercase().as_str() {
            "http" | "ws" => Ok(Scheme::Http),
            "https" | "wss" => Ok(Scheme::Https),
            _ => Err(ConfigError::InvalidScheme(s.to_owned())),
        }
    }

    /// The scheme as text.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Everything a [`crate::Pusher`] client needs. Build it with
/// [`Config::builder`], [`Config::from_url`] or [`Config::from_env`].
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) credentials: Credentials,
    pub(crate) scheme: Scheme,
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    pub(crate) timeout: Duration,
    pub(crate) proxy: Option<String>,
    pub(crate) max_data_bytes: usize,
    pub(crate) retry: RetryPolicy,
}

impl Config {
    /// Starts a configuration for the app `app_id`, with hosted Pusher's
    /// default cluster over HTTPS.
    ///
    /// ```
    /// use realtime_core::Config;
    /// let config = Config::builder("1", "key", "secret").cluster("eu").build().unwrap();
    /// assert_eq!(config.base_url(), "https://api-eu.pusher.com");
    /// ```
    pub fn builder(
        app_id: impl Into<String>,
        key: impl Into<String>,
        secret: impl Into<Secret>,
    ) -> ConfigBuilder {
        ConfigBuilder {
            credentials: Credentials::new(app_id, key, secret),
            cluster: None,
            host: None,
            port: None,
            scheme: Scheme::Https,
            timeout: DEFAULT_TIMEOUT,
            proxy: None,
            encryption_master_key_base64: None,
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
            retry: RetryPolicy::default(),
        }
    }

    /// Reads `http[s]://KEY:SECRET@HOST[:PORT]/apps/APP_ID`.
    ///
    /// ```
    /// use realtime_core::Config;
    /// let config = Config::from_url("http://key:secret@127.0.0.1:6001/apps/42").unwrap();
    /// assert_eq!(config.credentials().app_id(), "42");
    /// assert_eq!(config.base_url(), "http://127.0.0.1:6001");
    /// ```
    pub fn from_url(url: &str) -> Result<Config, ConfigError> {
        Self::builder_from_url(url)?.build()
    }

    /// [`Config::from_url`], as a builder to adjust further.
    pub fn builder_from_url(url: &str) -> Result<ConfigBuilder, ConfigError> {
        let invalid = |why: &str| ConfigError::InvalidUrl(why.to_owned());
        let parsed = Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        let scheme = Scheme::parse(parsed.scheme())?;
        let host = parsed.host_str().ok_or_else(|| invalid("no host"))?;
        let key = percent_decode(parsed.username());
        let secret = percent_decode(parsed.password().ok_or_else(|| invalid("no secret"))?);
        if key.is_empty() || secret.is_empty() {
            return Err(invalid("no key or secret"));
        }
        let mut segments = parsed.path_segments().ok_or_else(|| invalid("no path"))?;
        let app_id = match (segments.next(), segments.next(), segments.next()) {
            (Some("apps"), Some(id), None | Some("")) if !id.is_empty() => id.to_owned(),
            _ => return Err(invalid("the path must be /apps/APP_ID")),
        };
        let mut builder = Config::builder(app_id, key, secret)
            .host(host)
            .scheme(scheme);
        if let Some(port) = parsed.port() {
            builder = builder.port(port);
        }
        Ok(builder)
    }

    /// Reads the `PUSHER_*` variables of the process environment; see
    /// [`Config::from_lookup`].
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from `PUSHER_URL`, or from `PUSHER_APP_ID`,
    /// `PUSHER_KEY` (or `NEXT_PUBLIC_PUSHER_KEY`), `PUSHER_SECRET`,
    /// `PUSHER_CLUSTER` (or `NEXT_PUBLIC_PUSHER_CLUSTER`), `PUSHER_HOST`,
    /// `PUSHER_PORT`, `PUSHER_SCHEME`, plus `PUSHER_ENCRYPTION_MASTER_KEY_BASE64`,
    /// as `lookup` answers them. Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut builder = if let Some(url) = get("PUSHER_URL") {
            Config::builder_from_url(&url)?
        } else {
            let app_id = get("PUSHER_APP_ID").ok_or(ConfigError::Missing("PUSHER_APP_ID"))?;
            let key = get("PUSHER_KEY")
                .or_else(|| get("NEXT_PUBLIC_PUSHER_KEY"))
                .ok_or(ConfigError::Missing("PUSHER_KEY"))?;
            let secret = get("PUSHER_SECRET").ok_or(ConfigError::Missing("PUSHER_SECRET"))?;
            let mut builder = Config::builder(app_id, key, secret);
            if let Some(cluster) =
                get("PUSHER_CLUSTER").or_else(|| get("NEXT_PUBLIC_PUSHER_CLUSTER"))
            {
                builder = builder.cluster(cluster);
            }
            if let Some(host) = get("PUSHER_HOST") {
                builder = builder.host(host);
            }
            if let Some(scheme) = get("PUSHER_SCHEME") {
                builder = builder.scheme(Scheme::parse(&scheme)?);
            }
            if let Some(port) = get("PUSHER_PORT") {
                let port = port
                    .trim()
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or(ConfigError::InvalidPort(port))?;
                builder = builder.port(port);
            }
            builder
        };
        if let Some(key) = get("PUSHER_ENCRYPTION_MASTER_KEY_BASE64") {
            builder = builder.encryption_master_key_base64(key);
        }
        builder.build()
    }

    /// Whether the environment configures hosted Pusher (or another server) at
    /// all, i.e. names an app id, key or URL. When it does not, an application
    /// may fall back to an embedded server.
    pub fn is_configured_in(lookup: impl Fn(&str) -> Option<String>) -> bool {
        ["PUSHER_URL", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET"]
            .iter()
            .any(|name| lookup(name).is_some_and(|v| !v.trim().is_empty()))
    }

    /// The app's credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// `scheme://host[:port]` of the HTTP API.
    pub fn base_url(&self) -> String {
        match self.port {
            Some(port) => format!("{}://{}:{}", self.scheme.as_str(), self.host, port),
            None => format!("{}://{}", self.scheme.as_str(), self.host),
        }
    }

    /// The API host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The API port, if not the scheme's default.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The limit on one event's data, in bytes.
    pub fn max_data_bytes(&self) -> usize {
        self.max_data_bytes
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }
}

fn percent_decode(s: &str) -> String {
    // In user info `+` and `&` stand for themselves (RFC 3986), not for a
    // space and a separator as in a form.
    let s = s.replace('+', "%2B").replace('&', "%26");
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Builds a [`Config`]; see [`Config::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ConfigBuilder {
    credentials: Credentials,
    cluster: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    scheme: Scheme,
    timeout: Duration,
    proxy: Option<String>,
    encryption_master_key_base64: Option<String>,
    max_data_bytes: usize,
    retry: RetryPolicy,
}

impl ConfigBuilder {
    /// Hosted Pusher's cluster: the API host becomes `api-{cluster}.pusher.com`.
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = Some(cluster.into());
        self
    }

    /// A self-hosted server's host name or address (wins over the cluster).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// The port, when not the scheme's default.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// `http` or `https` (the default).
    pub fn scheme(mut self, scheme: Scheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// Shorthand for [`ConfigBuilder::scheme`], as Pusher's SDKs name it.
    pub fn use_tls(self, tls: bool) -> Self {
        self.scheme(if tls { Scheme::Https } else { Scheme::Http })
    }

    /// How long to wait for one answer (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// An HTTP(S) proxy URL for every request.
    pub fn proxy(mut self, proxy: impl Into<String>) -> Self {
        self.proxy = Some(proxy.into());
        self
    }

    /// The encryption master key, base64 of 32 bytes; enables encrypted channels.
    pub fn encryption_master_key_base64(mut self, key: impl Into<String>) -> Self {
        self.encryption_master_key_base64 = Some(key.into());
        self
    }

    /// The limit on one event's data (default 10 KiB; dedicated clusters and
    /// self-hosted servers may allow more).
    pub fn max_data_bytes(mut self, bytes: usize) -> Self {
        self.max_data_bytes = bytes;
        self
    }

    /// How failed requests are retried.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Checks and finishes the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        let mut credentials = self.credentials;
        if credentials.app_id.is_empty() {
            return Err(ConfigError::Missing("app_id"));
        }
        if credentials.key.is_empty() {
            return Err(ConfigError::Missing("key"));
        }
        if credentials.secret.expose().is_empty() {
            return Err(ConfigError::Missing("secret"));
        }
        if let Some(key) = &self.encryption_master_key_base64 {
            credentials.encryption_master_key = Some(MasterKey::from_base64(key)?);
        }
        let host = match (self.host, self.cluster) {
            (Some(host), _) => host,
            (None, Some(cluster)) => format!("api-{cluster}.pusher.com"),
            (None, None) => format!("api-{DEFAULT_CLUSTER}.pusher.com"),
        };
        // A host given as a URL is a common slip; say so rather than build bad URLs.
        if host.is_empty() || host.contains("://") || host.contains('/') {
            return Err(ConfigError::InvalidUrl(format!(
                "host {host:?} must be a bare host name, without scheme or path"
            )));
        }
        Ok(Config {
            credentials,
            scheme: self.scheme,
            host,
            port: self.port,
            timeout: self.timeout,
            proxy: self.proxy,
            max_data_bytes: self.max_data_bytes,
            retry: self.retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn cluster_selects_the_api_host() {
        let config = Config::builder("1", "k", "s")
            .cluster("eu")
            .build()
            .unwrap();
        assert_eq!(config.base_url(), "https://api-eu.pusher.com");
        let config = Config::builder("1", "k", "s").build().unwrap();
        assert_eq!(config.base_url(), "https://api-mt1.pusher.com");
    }

    #[test]
    fn host_port_and_scheme_select_a_self_hosted_server() {
        let config = Config::builder("1", "k", "s")
            .cluster("eu")
            .host("127.0.0.1")
            .port(6001)
            .use_tls(false)
            .build()
            .unwrap();
        assert_eq!(config.base_url(), "http://127.0.0.1:6001");
    }

    #[test]
    fn hosts_given_as_urls_are_refused() {
        assert!(Config::builder("1", "k", "s")
            .host("https://x.com")
            .build()
            .is_err());
        assert!(Config::builder("1", "k", "s")
            .host("x.com/")
            .build()
            .is_err());
    }

    #[test]
    fn a_url_gives_every_part() {
        let config =
            Config::from_url("https://my%2Bkey:se%2Fcret@api-eu.pusher.com/apps/123").unwrap();
        assert_eq!(config.credentials().key(), "my+key");
        assert_eq!(config.credentials().secret().expose(), "se/cret");
        assert_eq!(config.credentials().app_id(), "123");
        assert_eq!(config.base_url(), "https://api-eu.pusher.com");
        for bad in [
            "not a url",
            "ftp://k:s@h/apps/1",
            "http://h/apps/1",
            "http://k@h/apps/1",
            "http://k:s@h/apps",
            "http://k:s@h/other/1",
            "http://k:s@h/apps/1/extra",
        ] {
            assert!(Config::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_environment_is_read_as_the_contract_says() {
        let config = Config::from_lookup(env(&[
            ("PUSHER_APP_ID", "1"),
            ("PUSHER_KEY", "k"),
            ("PUSHER_SECRET", "s"),
            ("PUSHER_HOST", "localhost"),
            ("PUSHER_PORT", "6001"),
            ("PUSHER_SCHEME", "http"),
        ]))
        .unwrap();
        assert_eq!(config.base_url(), "http://localhost:6001");

        let config = Config::from_lookup(env(&[
            ("PUSHER_APP_ID", "1"),
            ("NEXT_PUBLIC_PUSHER_KEY", "k"),
            ("PUSHER_SECRET", "s"),
            ("NEXT_PUBLIC_PUSHER_CLUSTER", "ap2"),
            (
                "PUSHER_ENCRYPTION_MASTER_KEY_BASE64",
                "a7QyXV8eYrtJBehbuix68XCPO6+LrpnNNReWOkaXW7A=",
            ),
        ]))
        .unwrap();
        assert_eq!(config.base_url(), "https://api-ap2.pusher.com");
        assert!(config.credentials().encryption_master_key().is_some());

        assert_eq!(
            Config::from_lookup(env(&[("PUSHER_KEY", "k")])).unwrap_err(),
            ConfigError::Missing("PUSHER_APP_ID")
        );
        assert!(matches!(
            Config::from_lookup(env(&[
                ("PUSHER_APP_ID", "1"),
                ("PUSHER_KEY", "k"),
                ("PUSHER_SECRET", "s"),
                ("PUSHER_PORT", "http")
            ])),
            Err(ConfigError::InvalidPort(_))
        ));
        assert!(!Config::is_configured_in(env(&[("PUSHER_CLUSTER", "eu")])));
        assert!(Config::is_configured_in(env(&[("PUSHER_APP_ID", "1")])));
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let config = Config::builder("1", "public-key", "very-secret-value")
            .encryption_master_key_base64("a7QyXV8eYrtJBehbuix68XCPO6+LrpnNNReWOkaXW7A=")
            .build()
            .unwrap();
        let printed = format!("{config:?}");
        assert!(printed.contains("public-key"));
        assert!(!printed.contains("very-secret-value"));
        assert!(!printed.contains("a7QyXV8"));
    }
}
