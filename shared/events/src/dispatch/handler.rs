//! What a module gives the dispatcher: its handler, and which events it
//! wants.

use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use kernel::Envelope;
use tracing::Instrument as _;

/// Reacts to events. Runs inside the subscribing module's transaction
/// (`conn`), together with the inbox row that marks the event handled, so
/// its effects happen exactly once or not at all.
#[async_trait::async_trait]
pub trait EventHandler: Send + Sync {
    /// Handles one event.
    ///
    /// # Errors
    /// Anything that should roll back and retry later.
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &Envelope,
    ) -> Result<(), HandlerError>;

    /// Handles several events, in order, in one transaction (a share of a
    /// relay's batch, none of them handled before). By default each goes
    /// through [`EventHandler::handle`] in turn; a handler whose events can
    /// share a statement overrides it. It must leave the same state as
    /// handling them one by one would.
    ///
    /// # Errors
    /// Anything that should roll back: the events are then handled one by
    /// one, each with its retries.
    async fn handle_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[&Envelope],
    ) -> Result<(), HandlerError> {
        one_by_one(self, conn, events).await
    }

    /// Runs after `handle`'s transaction committed (or rolled back, with
    /// `committed` false): for effects outside the database that must not
    /// happen before the change is visible, such as invalidating a cache a
    /// concurrent reader could otherwise refill with the old row.
    async fn finished(&self, _event: &Envelope, _committed: bool) {}
}

/// `events` through `handler`'s [`EventHandler::handle`] in turn, each in
/// its event's span: what [`EventHandler::handle_batch`] does by default,
/// for an override that batches only some batches.
///
/// # Errors
/// The first event's failure.
pub async fn one_by_one<H: EventHandler + ?Sized>(
    handler: &H,
    conn: &mut AsyncPgConnection,
    events: &[&Envelope],
) -> Result<(), HandlerError> {
    for event in events {
        handler
            .handle(conn, event)
            .instrument(super::event_span(event))
            .await?;
    }
    Ok(())
}

/// `work` (a handler's), a panic in it made a [`HandlerError`] like any
/// other failure: rolled back, retried, at last dead-lettered. Unwound
/// further, it would end the relay or the RabbitMQ consumer that ran it,
/// and with it every later event of that module in this process.
pub(crate) async fn guarded<F>(work: F) -> Result<(), HandlerError>
where
    F: std::future::Future<Output = Result<(), HandlerError>>,
{
    use futures_util::FutureExt as _;
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            Err(HandlerError::new(format!(
                "the handler panicked: {message}"
            )))
        }
    }
}

/// A handler failed; its transaction is rolled back.
///
/// Either the event's own failure ([`HandlerError::new`]: retried a few
/// times, then dead-lettered for an operator), or the database's
/// ([`HandlerError::transient`]: no connection within the pool's wait, a
/// lost connection, a statement timeout, a deadlock; never dead-lettered,
/// the event is offered again later, as when nothing could be recorded).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    message: String,
    transient: bool,
}

impl HandlerError {
    /// A failure of this event at this handler.
    pub fn new(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            transient: false,
        }
    }

    /// The database cannot answer now; the same event may pass later.
    pub fn transient(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            transient: true,
        }
    }

    /// Whether the failure was the database's, not the event's.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// What failed.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<diesel::result::Error> for HandlerError {
    fn from(e: diesel::result::Error) -> HandlerError {
        let message = format!("database: {e}");
        if db::unavailable_reason(&e).is_some() {
            HandlerError::transient(message)
        } else {
            HandlerError::new(message)
        }
    }
}

/// A module's handler for some event types.
#[derive(Clone)]
pub struct Subscription {
    /// The subscribing module (its schema holds the inbox and dead letters).
    pub module: &'static str,
    /// Unique handler name (`notification.product_events`).
    pub name: &'static str,
    /// Event types handled.
    pub event_types: Vec<&'static str>,
    /// The handler.
    pub handler: Arc<dyn EventHandler>,
    /// The module's pool.
    pub pool: db::Pool,
}
