//! `[events]` settings.

use serde::Deserialize;

/// How events travel between modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TransportKind {
    /// Within this process only (the monolith).
    #[serde(rename = "in-process")]
    InProcess,
    /// Through RabbitMQ (modules in several processes).
    #[serde(rename = "rabbitmq")]
    RabbitMq,
}

/// `[events]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSettings {
    /// `in-process` or `rabbitmq`.
    pub transport: TransportKind,
    /// Whether this process relays its modules' outboxes (off only to
    /// simulate a crash between commit and delivery).
    pub relay_enabled: bool,
    /// How often the relay looks for events when no writer of this process
    /// woke it, ms.
    pub poll_interval_ms: u64,
    /// How long a woken relay waits before it looks, ms, so that the events
    /// of writers committing close together travel in one batch (fewer
    /// relay and handler transactions, each event later by at most this).
    pub batch_window_ms: u64,
    /// Most events delivered per relay transaction.
    pub batch_size: i64,
    /// Tries per handler before the event is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay ceiling, ms (doubles each try, full jitter).
    pub retry_base_ms: u64,
    /// Largest retry delay ceiling, ms.
    pub retry_max_ms: u64,
    /// Delivered outbox rows and inbox rows older than this are pruned, hours.
    pub retention_hours: u64,
    /// How often the relay prunes, seconds.
    pub prune_interval_secs: u64,
    /// Fault injection for tests: pause inside each handler's transaction, ms.
    pub pause_in_handler_ms: u64,
    /// The broker, for `transport = "rabbitmq"`.
    pub rabbitmq: RabbitMqSettings,
}

/// `[events.rabbitmq]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqSettings {
    /// `amqp://user:password@host:5672/%2f`.
    pub url: String,
    /// Prefix of the exchange and queue names (`<ns>.events`, `<ns>.<module>`).
    pub namespace: String,
    /// Unacknowledged deliveries per consumer.
    pub prefetch: u16,
    /// When set, queues expire after this long unused (tests).
    pub queue_ttl_ms: Option<u64>,
}
