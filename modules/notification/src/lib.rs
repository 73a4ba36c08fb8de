//! Notification module: turns events into messages people receive.
//!
//! Consumes events only; nothing calls it synchronously. For each event it
//! handles, [`NotificationHandler`] writes the messages to send (admin emails, emails to
//! users, signed webhook calls) in the same transaction as the inbox row, so
//! a redelivered event adds nothing. The [`Sender`] delivers them with
//! retries and records status, attempts and the last error. Users' email
//! opt-ins come from a read model fed by the user module's events.

pub mod egress;
mod events;
pub mod http;
mod registration;
mod repo;
mod templates;
mod worker;

pub use events::NotificationHandler;
pub use worker::Sender;

use serde::Deserialize;

/// Name of the module, of its schema and of its config section.
pub const NAME: &str = "notification";

db::module_migrations!(NAME, "../../migrations/notification");

pub use notification_api::{ROUTE_PREFIXES, SUBSCRIBES as EVENT_TYPES};
pub use registration::REGISTRATION;

/// Name of the module's event handler (inbox and dead letters).
pub const HANDLER: &str = "notification.notify";

/// The `[notification]` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Database of this module.
    pub database: db::ModuleDatabase,
    /// Where admin notifications (product events) go.
    pub admin_email: String,
    /// `From:` of every email.
    pub from: String,
    /// How often the sender looks for messages to send, ms.
    pub poll_interval_ms: u64,
    /// Tries per message before it is marked failed.
    pub max_attempts: i32,
    /// How long a message the other side keeps refusing (a receiver's 3xx
    /// or 4xx, an SMTP relay's 5xx that is not about the mailbox: a bad
    /// setting on one side or the other, a receiver mid-deploy) is tried,
    /// seconds from when it was queued, past `max_attempts`: time to mend
    /// the setting, at `retry_max_ms` apart. A message that fails (no
    /// answer, a 5xx from a receiver) is bounded by `max_attempts` alone:
    /// its breaker defers it without spending attempts meanwhile.
    #[serde(default = "default_refused_patience_secs")]
    pub refused_patience_secs: u64,
    /// First retry delay, ms (doubles per try, with jitter).
    pub retry_base_ms: u64,
    /// Largest retry delay, ms.
    pub retry_max_ms: u64,
    /// Sent and failed messages are deleted this many days after they were
    /// queued (pending ones never are).
    pub retention_days: u32,
    /// How often the sender deletes them, seconds (at least 1).
    pub prune_interval_secs: u64,
    /// How email leaves the shop.
    pub email: EmailSettings,
    /// Internal networks webhooks may call anyway (development and tests:
    /// a receiver on this machine). Webhooks go to public addresses only
    /// otherwise; see [`egress`].
    #[serde(default)]
    pub webhook_allow: Vec<ipnet::IpNet>,
    /// Webhook subscriptions beyond which a creation is refused (at least
    /// 1): every event of a subscribed type is a call to each, and the
    /// admin's list of them is one page. Lowering it removes none.
    #[serde(default = "default_max_webhooks")]
    pub max_webhooks: u32,
}

fn default_max_webhooks() -> u32 {
    100
}

fn default_refused_patience_secs() -> u64 {
    86_400
}

/// `[notification.email]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// `file` (development: one `.eml` per message in `file_dir`) or `smtp`.
    pub transport: EmailTransport,
    /// Directory of the file transport.
    pub file_dir: std::path::PathBuf,
    /// SMTP server host.
    pub smtp_host: String,
    /// SMTP server port.
    pub smtp_port: u16,
    /// `none`, `starttls` or `tls` (implicit TLS).
    pub smtp_tls: SmtpTls,
    /// SMTP user name, if the server wants one.
    pub smtp_username: Option<String>,
    /// SMTP password (set it through the environment, never in a file).
    pub smtp_password: Option<String>,
}

/// How email is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTransport {
    /// Files in a directory.
    File,
    /// An SMTP server.
    Smtp,
}

/// Transport security towards the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (a local relay).
    None,
    /// Upgrade with STARTTLS (port 587).
    Starttls,
    /// TLS from the start (port 465).
    Tls,
}
