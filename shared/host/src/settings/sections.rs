//! The cross-cutting sections of the settings: `[server]`, `[database]`,
//! `[log]`, `[remote]`, `[auth]`, `[rate_limit]` and `[cors]` (each module's
//! own section is its crate's `Settings`).

use serde::Deserialize;

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind.
    pub host: std::net::IpAddr,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Seconds in-flight requests get after a stop signal.
    pub shutdown_timeout_secs: u64,
    /// Largest request body, in bytes.
    pub body_limit_bytes: usize,
    /// How long after its head a request's body may take to arrive (ms):
    /// later, 408 `request_timeout` and the connection closed.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// Serve Swagger UI at `/swagger-ui/` (the spec at
    /// `/api-docs/openapi.json` is always served). Off in production unless
    /// set explicitly.
    pub swagger_ui: bool,
    /// After a stop signal, how long readiness answers 503 while the server
    /// still serves, before it stops accepting (ms).
    #[serde(default)]
    pub drain_delay_ms: u64,
    /// Most client connections open at once, across the workers (each
    /// takes its share, rounded up): past it, new ones wait in the listen
    /// backlog until one closes, so a flood of connections cannot take the
    /// file descriptors the database pools and outgoing calls need.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_body_timeout_ms() -> u64 {
    10_000
}

fn default_max_connections() -> usize {
    10_000
}

impl ServerSettings {
    /// The HTTP server's worker threads: `workers`, or one per core when 0
    /// (actix-web's own default).
    pub fn worker_threads(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }
    }

    /// Each worker's share of `max_connections` (actix-web counts per
    /// worker), at least one.
    pub fn connections_per_worker(&self) -> usize {
        self.max_connections.div_ceil(self.worker_threads()).max(1)
    }
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Server URL; `None` lets development start an embedded server.
    pub url: Option<String>,
    /// Whether an embedded server may be started when `url` is absent.
    pub embedded: bool,
    /// Data directory of the embedded server.
    pub embedded_dir: std::path::PathBuf,
    /// Run pending migrations at start.
    pub migrate_on_start: bool,
    /// Longest wait for a pooled connection (then 503), ms.
    pub acquire_timeout_ms: u64,
    /// Longest time to open a connection, ms.
    pub connect_timeout_ms: u64,
    /// `statement_timeout` of every connection, ms.
    pub statement_timeout_ms: u64,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `json`, `pretty` or `auto`.
    pub format: telemetry::LogFormat,
    /// Filter used when `RUST_LOG` is not set.
    pub filter: String,
}

/// `[remote]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSettings {
    /// Timeout of one call to another process, ms.
    pub timeout_ms: u64,
    /// PEM files of root certificates trusted on every outgoing `https`
    /// call besides the platform's (a private CA of the deployment).
    #[serde(default)]
    pub extra_root_certificates: Vec<std::path::PathBuf>,
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `iss` of access tokens.
    pub issuer: String,
    /// `aud` of access tokens.
    pub audience: String,
    /// Lifetime of an access token, seconds.
    pub access_token_ttl_secs: u64,
    /// PKCS#8 PEM Ed25519 private key that signs access tokens.
    pub signing_key_file: std::path::PathBuf,
    /// Generate the signing key on first run when it is missing (development).
    pub generate_dev_key: bool,
    /// Retired keys (PEM) whose tokens are still accepted until they expire.
    pub previous_key_files: Vec<std::path::PathBuf>,
    /// PKCS#8 PEM Ed25519 private key that signs service tokens (the
    /// shop's modules calling each other), shared by every process of a
    /// deployment; generated on first run where `generate_dev_key` allows.
    pub service_key_file: std::path::PathBuf,
    /// Other service keys (PEM, public or private) whose service tokens and
    /// event seals are accepted, never signed with: the next key before
    /// any process signs with it, then the last one until none does.
    pub accepted_service_key_files: Vec<std::path::PathBuf>,
}

impl AuthSettings {
    /// What issuers write and verifiers check.
    pub fn policy(&self) -> auth::TokenPolicy {
        auth::TokenPolicy {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            access_ttl: std::time::Duration::from_secs(self.access_token_ttl_secs),
        }
    }
}

/// `[rate_limit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Off for load tests: `APP__RATE_LIMIT__ENABLED=false`.
    pub enabled: bool,
    /// Sustained requests per second per client IP on `/api/v1`; may be
    /// a fraction (`0.5`: one request every two seconds), down to one a day.
    pub per_second: f64,
    /// Burst above the sustained rate.
    pub burst: u32,
    /// Sign-ins per minute per client IP.
    pub login_per_minute_per_ip: u32,
    /// Sign-ins per minute per account.
    pub login_per_minute_per_account: u32,
    /// Registrations per minute per client IP.
    pub registrations_per_minute_per_ip: u32,
    /// Proxies (our own gateway, an Ingress) whose `x-forwarded-for`
    /// names the client: addresses or ranges (`10.0.0.0/8`).
    pub trusted_proxies: Vec<web::ratelimit::TrustedProxy>,
}

impl RateLimitSettings {
    /// The slowest sustained rate `per_second` may name: one a day.
    pub const MIN_PER_SECOND: f64 = 1.0 / 86_400.0;
    /// The quickest: one a nanosecond, the limiter's finest period.
    pub const MAX_PER_SECOND: f64 = 1e9;

    /// Whether `per_second` is a rate the limiter can keep.
    pub fn per_second_is_valid(&self) -> bool {
        (Self::MIN_PER_SECOND..=Self::MAX_PER_SECOND).contains(&self.per_second)
    }

    /// How long a client's budget takes to win back one request: the
    /// inverse of `per_second` (a second when it is not valid, which
    /// validation refuses while limits are on).
    pub fn refill_period(&self) -> std::time::Duration {
        if self.per_second_is_valid() {
            std::time::Duration::from_secs_f64(1.0 / self.per_second)
        } else {
            std::time::Duration::from_secs(1)
        }
    }

    /// A per-minute limit, or `None` when limits are off.
    pub fn per_minute(&self, limit: u32) -> Option<u32> {
        self.enabled.then_some(limit)
    }
}

/// `[cors]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins (`https://host[:port]`) allowed to call the API cross-site.
    pub allowed_origins: Vec<String>,
}
