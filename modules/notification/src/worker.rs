//! The sender: delivers queued messages, retries, records the outcome.

use std::time::Duration;

use diesel_async::AsyncConnection as _;
use futures_util::FutureExt as _;
use hmac::{Hmac, Mac as _};
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
};
use rand::Rng as _;
use sha2::Sha256;
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::{EmailTransport, Settings, SmtpTls, repo};

enum Mailer {
    File(AsyncFileTransport<Tokio1Executor>),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// Messages a round claims at most.
const ROUND: i64 = 20;

/// The shortest claim on a round's messages (see [`Sender::lease`]).
const MIN_LEASE: Duration = Duration::from_secs(30);

/// Webhook URLs sent to at once at most ([`Sender::run`]); each is sent
/// its messages one at a time, and the emails beside them, one at a time.
const BUSY_RECEIVERS: usize = 16;

/// How long a stopping sender waits for its pruning to reach a step's end.
const PRUNE_STOP: Duration = Duration::from_secs(5);

/// How long a send task lets deliveries go unrecorded before it records
/// them, after its next send.
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// How often the breakers of webhook receivers no longer called are
/// forgotten ([`resilience::Policy::forget_idle_destinations`]).
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// Delivers pending notifications: email through the configured transport,
/// webhooks as signed POSTs. Several instances may run: each round claims
/// its messages for a lease, in a statement of its own
/// (`FOR UPDATE SKIP LOCKED`), and sends them outside any transaction.
pub struct Sender {
    pool: db::Pool,
    settings: Settings,
    mailer: Mailer,
    http: reqwest::Client,
    /// Checks literal IP hosts (the client's resolver checks names).
    egress: crate::egress::Egress,
    smtp: std::sync::Arc<resilience::Policy>,
    webhooks: std::sync::Arc<resilience::Policy>,
}

impl Sender {
    /// A sender over the module's pool.
    ///
    /// # Errors
    /// An SMTP host that does not parse, or a mail directory that cannot be made.
    /// Email goes through the `smtp` policy, webhook calls through `webhooks`
    /// (timeouts, breaker, bulkhead; the sender's own schedule retries), on
    /// `http`, a client that calls public addresses only ([`crate::egress`]).
    pub fn new(
        pool: db::Pool,
        settings: Settings,
        http: reqwest::Client,
        smtp: std::sync::Arc<resilience::Policy>,
        webhooks: std::sync::Arc<resilience::Policy>,
    ) -> anyhow::Result<Sender> {
        let email = &settings.email;
        let mailer = match email.transport {
            EmailTransport::File => {
                std::fs::create_dir_all(&email.file_dir)?;
                Mailer::File(AsyncFileTransport::<Tokio1Executor>::new(&email.file_dir))
            }
            EmailTransport::Smtp => {
                let mut builder = match email.smtp_tls {
                    SmtpTls::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.smtp_host)
                    }
                    SmtpTls::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&email.smtp_host)?
                    }
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&email.smtp_host)?,
                }
                .port(email.smtp_port)
                // Each read and write on the connection may take as long as
                // the policy lets the whole attempt take: a slow server's
                // reply is cut by the attempt's timeout, not before it.
                .timeout(Some(smtp.attempt_timeout()));
                if let (Some(user), Some(password)) = (&email.smtp_username, &email.smtp_password) {
                    builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
                }
                Mailer::Smtp(builder.build())
            }
        };
        Ok(Sender {
            pool,
            egress: crate::egress::Egress::new(settings.webhook_allow.clone()),
            settings,
            mailer,
            http,
            smtp,
            webhooks,
        })
    }

    /// Sends due messages until `stop` turns true, then waits for the
    /// sends under way.
    ///
    /// Each webhook URL's messages are sent in order, one at a time, by a
    /// task of their own, up to [`BUSY_RECEIVERS`] URLs side by side; the
    /// emails go through one more such task (one relay). While a
    /// destination is busy, this process's claims leave its messages alone,
    /// so a receiver that is slow or times out holds up only its own. Each
    /// task records what it sent (see [`Sender::send`]); pruning runs in a
    /// task of its own, so that neither waits for this loop.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let this = std::sync::Arc::new(self);
        let interval = Duration::from_millis(this.settings.poll_interval_ms.max(10));
        let prune_every = Duration::from_secs(this.settings.prune_interval_secs.max(1));
        let mut pruned = std::time::Instant::now();
        let mut pruning: Option<tokio::task::JoinHandle<()>> = None;
        let mut forgotten = std::time::Instant::now();
        let mut sending = tokio::task::JoinSet::new();
        let mut busy = Busy::default();
        let mut stopping = false;
        loop {
            stopping |= *stop.borrow();
            if !stopping
                && pruned.elapsed() >= prune_every
                && pruning
                    .as_ref()
                    .is_none_or(tokio::task::JoinHandle::is_finished)
            {
                let sender = std::sync::Arc::clone(&this);
                let stop = stop.clone();
                pruning = Some(tokio::spawn(async move { sender.prune(&stop).await }));
                pruned = std::time::Instant::now();
            }
            if forgotten.elapsed() >= FORGET_EVERY {
                this.webhooks.forget_idle_destinations();
                forgotten = std::time::Instant::now();
            }
            let mut claimed = 0;
            let receivers = BUSY_RECEIVERS.saturating_sub(busy.receivers.len());
            // While the relay's breaker turns every send away, emails are
            // left where they are: claiming them would only defer each
            // (two writes a message, the whole due backlog again every
            // wait, and the relay's real error overwritten). The first
            // claim after its wait is the breaker's trial.
            let emails = busy.email.is_none() && this.smtp.rejecting_for().is_none();
            if !stopping && (receivers > 0 || emails) {
                match this.claim(emails, receivers, &mut busy).await {
                    Ok((due, started)) => {
                        claimed = due.len();
                        for (destination, items) in by_destination(due) {
                            let (sender, stop) = (std::sync::Arc::clone(&this), stop.clone());
                            let task = sending
                                .spawn(async move { sender.send(items, started, &stop).await });
                            busy.insert(task.id(), destination);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "notification round failed"),
                }
            }
            // Finished sends free their destinations.
            while let Some(Some(done)) = sending.join_next_with_id().now_or_never() {
                busy.finished(done);
            }
            if stopping {
                while let Some(done) = sending.join_next_with_id().await {
                    busy.finished(done);
                }
                // Pruning stops between its steps; each is a statement or a
                // transaction bounded by the statement timeout.
                if let Some(mut pruning) = pruning
                    && tokio::time::timeout(PRUNE_STOP, &mut pruning)
                        .await
                        .is_err()
                {
                    tracing::warn!("pruning notifications did not stop in time");
                    pruning.abort();
                }
                break;
            }
            // Something was claimed: claim again at once for the idle
            // destinations. Else wait for the next poll, a destination to
            // free up, or the stop.
            if claimed == 0 {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    Some(done) = sending.join_next_with_id(), if !sending.is_empty() => {
                        busy.finished(done);
                    }
                    changed = stop.changed() => stopping |= changed.is_err(),
                }
            }
        }
    }

    /// Deletes the settled messages older than `retention_days`.
    async fn prune(&self, stop: &watch::Receiver<bool>) {
        let Ok(mut conn) = db::connection(&self.pool, crate::NAME).await else {
            return;
        };
        match repo::prune(&mut conn, self.settings.retention_days, stop).await {
            Ok(n) if n > 0 => tracing::info!(rows = n, "pruned settled notifications"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning notifications failed"),
        }
        // Order updates still held for customers now registered: their
        // registration was handled by an instance from before held
        // messages (a rolling upgrade), which did not write them out.
        let stranded = match repo::stranded_held(&mut conn, 100).await {
            Ok(stranded) => stranded,
            Err(e) => {
                tracing::warn!(error = %e, "looking for held notifications failed");
                return;
            }
        };
        for customer in stranded {
            if *stop.borrow() {
                return;
            }
            let released = conn
                .transaction::<_, events::HandlerError, _>(async |conn| {
                    crate::events::release_held(conn, customer).await
                })
                .await;
            if let Err(e) = released {
                tracing::warn!(error = %e, "releasing held notifications failed");
            }
        }
    }

    /// The longest one send may take (its policy's deadline).
    fn longest_send(&self) -> Duration {
        self.smtp.deadline().max(self.webhooks.deadline())
    }

    /// How long a round's messages are claimed for: three times the
    /// longest send, and at least [`MIN_LEASE`]. A round tries a message
    /// only while twice the longest send still fits in what is left of the
    /// lease (its clock started before the claim), so a send ends, and is
    /// recorded, before any other sender may take the message; the first
    /// message of a round always fits.
    fn lease(&self) -> Duration {
        (self.longest_send() * 3).max(MIN_LEASE)
    }

    /// Claims due messages for the lease, oldest first (bulk email last): up to [`ROUND`]
    /// emails if `emails`, and up to `webhooks` webhook messages, none to a
    /// URL being sent to. A statement of its own, committed before anything
    /// is sent, so no transaction or lock is held while the network is slow.
    /// With the time the lease's clock started.
    async fn claim(
        &self,
        emails: bool,
        webhooks: usize,
        busy: &mut Busy,
    ) -> Result<(Vec<repo::Due>, std::time::Instant), String> {
        let lease_ms = i64::try_from(self.lease().as_millis()).unwrap_or(i64::MAX);
        let mut excluded: Vec<String> = busy.blocked().cloned().collect();
        excluded.extend(busy.receivers.values().cloned());
        let limits = repo::Limits {
            emails: if emails { ROUND } else { 0 },
            webhooks: i64::try_from(webhooks).unwrap_or(ROUND).min(ROUND),
        };
        let started = std::time::Instant::now();
        let mut conn = self.connection().await?;
        let due = repo::claim_due(&mut conn, limits, lease_ms, &excluded)
            .await
            .map_err(|e| e.to_string())?;
        Ok((due, started))
    }

    /// Sends one destination's claimed messages in order (the claim's clock
    /// started at `started`), records each failure as it happens and the
    /// deliveries together, at least every [`RECORD_EVERY`], and hands back
    /// the messages it did not try.
    async fn send(
        &self,
        due: Vec<repo::Due>,
        started: std::time::Instant,
        stop: &watch::Receiver<bool>,
    ) -> Option<std::time::Instant> {
        let (lease, longest) = (self.lease(), self.longest_send());
        let claimed_until = due.first().map(|item| item.claimed_until)?;
        // Deferred (the destination's breaker or bulkhead turned a send
        // away): the rest of the round is not tried, and the destination
        // is left out of the claims until then.
        let mut blocked = None;
        let mut sent = Vec::with_capacity(due.len());
        let mut recorded = std::time::Instant::now();
        let mut untried = Vec::new();
        let mut failed = false;
        for item in due {
            // Stopping, out of lease, or the database gone: the rest go
            // back for the next round (here or in another process).
            if failed
                || blocked.is_some()
                || *stop.borrow()
                || started.elapsed() + longest * 2 > lease
            {
                untried.push(item.id);
                continue;
            }
            let span = tracing::info_span!(
                "notification",
                notification.id = %item.id,
                channel = %item.channel,
                event.type = %item.event_type,
                request_id = item.request_id.as_deref().unwrap_or(""),
            );
            let outcome = self.deliver(&item).instrument(span.clone()).await;
            if let Delivery::Deferred(_, wait) = &outcome {
                blocked = Some(std::time::Instant::now() + *wait);
            }
            match self.record(&item, outcome).instrument(span).await {
                Ok(true) => sent.push(item.id),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "recording a notification failed");
                    failed = true;
                }
            }
            // Deliveries of a slow round are recorded as it goes, after a
            // send once a second has passed since the last record: a process
            // that dies loses the record of about that much sending and the
            // send in flight. What fails to be recorded is tried again at
            // the end (the claim's lease guards the statement).
            if recorded.elapsed() >= RECORD_EVERY && !sent.is_empty() {
                match self.mark_sent(&sent, claimed_until).await {
                    Ok(()) => sent.clear(),
                    Err(e) => {
                        tracing::warn!(error = %e, "recording deliveries failed");
                        failed = true;
                    }
                }
                recorded = std::time::Instant::now();
            }
        }
        // What went out is recorded (unrecorded, it goes out again once the
        // lease is over), whatever happened before.
        if let Err(e) = self.mark_sent(&sent, claimed_until).await {
            tracing::warn!(error = %e, messages = sent.len(), "recording deliveries failed");
        }
        // What was not tried is due again at once.
        if !untried.is_empty() {
            let released = match self.connection().await {
                Ok(mut conn) => repo::release(&mut conn, &untried, claimed_until)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            if let Err(e) = released {
                tracing::warn!(error = %e, "handing back untried notifications failed");
            }
        }
        blocked
    }

    /// Records the deliveries `ids` of a round claimed until `claimed_until`.
    async fn mark_sent(
        &self,
        ids: &[uuid::Uuid],
        claimed_until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), String> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.connection().await?;
        repo::mark_sent(&mut conn, ids, claimed_until)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn connection(&self) -> Result<db::Object, String> {
        db::connection(&self.pool, crate::NAME)
            .await
            .map_err(|e| e.to_string())
    }

    async fn deliver(&self, item: &repo::Due) -> Delivery {
        // Not idempotent (a resend could deliver twice): the policy bounds the
        // call; retrying is the sender's schedule. A refusal (a bad address, a
        // receiver's 4xx) is an answer, not a failure of the dependency.
        let attempt = || async {
            let result = if item.channel == "email" {
                self.email(item).await
            } else {
                self.webhook(item).await
            };
            let verdict = match &result {
                Ok(()) | Err(Attempt::Refused(_) | Attempt::Rejected(_)) => {
                    resilience::Verdict::Healthy
                }
                Err(Attempt::Failed(_)) => resilience::Verdict::Failed {
                    retryable: false,
                    retry_after: None,
                },
            };
            (result, verdict)
        };
        let outcome = match item.channel.as_str() {
            // One relay: its breaker is the dependency's.
            "email" => self.smtp.call(None, false, attempt).await,
            // Each receiver's origin has a breaker of its own: one receiver
            // down defers its own deliveries, not every subscriber's.
            "webhook" => {
                let origin = receiver_origin(&item.destination);
                self.webhooks.call_to(&origin, None, false, attempt).await
            }
            other => return Delivery::Failed(format!("unknown channel `{other}`")),
        };
        match outcome {
            Ok(()) => Delivery::Sent,
            Err(resilience::PolicyError::Failed(Attempt::Refused(e))) => Delivery::Refused(e),
            Err(resilience::PolicyError::Failed(Attempt::Failed(e))) => Delivery::Failed(e),
            Err(resilience::PolicyError::Failed(Attempt::Rejected(e))) => Delivery::Rejected(e),
            // Not tried at all: the breaker is open or too many sends are in
            // flight. Try again later without spending an attempt.
            Err(e @ resilience::PolicyError::BreakerOpen { retry_after }) => {
                Delivery::Deferred(e.to_string(), retry_after)
            }
            Err(e @ resilience::PolicyError::BulkheadFull) => {
                Delivery::Deferred(e.to_string(), Duration::from_secs(1))
            }
            Err(other) => Delivery::Failed(other.to_string()),
        }
    }

    async fn email(&self, item: &repo::Due) -> Result<(), Attempt> {
        let refused = |e: String| Attempt::Rejected(e);
        let message = Message::builder()
            .from(
                self.settings
                    .from
                    .parse()
                    .map_err(|e| refused(format!("notification.from: {e}")))?,
            )
            .to(item
                .destination
                .parse()
                .map_err(|e| refused(format!("bad address: {e}")))?)
            .subject(&item.subject)
            // Stable per notification: a message sent again (its round's
            // record lost) is the same message to mail systems, which drop
            // a repeated Message-ID, as `x-shop-delivery` is for webhooks.
            .message_id(Some(format!("<{}@notifications.shop>", item.id)))
            .header(ContentType::TEXT_PLAIN)
            .body(as_lines(&item.body))
            .map_err(|e| refused(e.to_string()))?;
        match &self.mailer {
            Mailer::File(t) => t
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| Attempt::Failed(e.to_string())),
            Mailer::Smtp(t) => t.send(message).await.map(|_| ()).map_err(|e| {
                // A permanent (5xx) reply is the server's answer, not its
                // failure; only a mailbox refused for good ends the message.
                if mailbox_refused(&e) {
                    Attempt::Rejected(e.to_string())
                } else if e.is_permanent() {
                    Attempt::Refused(e.to_string())
                } else {
                    Attempt::Failed(e.to_string())
                }
            }),
        }
    }

    async fn webhook(&self, item: &repo::Due) -> Result<(), Attempt> {
        let secret = item
            .secret
            .as_deref()
            .ok_or_else(|| Attempt::Rejected("the webhook subscription was deleted".to_owned()))?;
        let url = url::Url::parse(&item.destination)
            .map_err(|e| Attempt::Rejected(format!("not a URL: {e}")))?;
        if let Err(refused) = self.egress.check_literal(&url) {
            return Err(Attempt::Rejected(refused.0));
        }
        let timestamp = chrono::Utc::now().timestamp();
        let request = self
            .http
            .post(&item.destination)
            .header("content-type", "application/json")
            .header("x-shop-event", &item.event_type)
            .header("x-shop-delivery", item.id.to_string())
            .header("x-shop-signature", sign(secret, timestamp, &item.body))
            .body(item.body.clone());
        let (request, span) = telemetry::trace::outgoing(request, "webhook");
        let response = request.send().instrument(span).await.map_err(|e| {
            match crate::egress::refusal(&e) {
                Some(refused) => Attempt::Rejected(refused.0.clone()),
                None => Attempt::Failed(format!("webhook call failed: {e}")),
            }
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(Attempt::Refused(format!(
                "webhook answered {status}: redirects are not followed (they would replay the signed body elsewhere)"
            )))
        } else if status.is_client_error()
            && status != reqwest::StatusCode::REQUEST_TIMEOUT
            && status != reqwest::StatusCode::TOO_MANY_REQUESTS
        {
            Err(Attempt::Refused(format!("webhook answered {status}")))
        } else {
            Err(Attempt::Failed(format!("webhook answered {status}")))
        }
    }

    /// Records how a send went: true for a delivery, which the caller
    /// records with its task's others ([`repo::mark_sent`]).
    async fn record(&self, item: &repo::Due, outcome: Delivery) -> Result<bool, String> {
        let attempts = item.attempts + 1;
        let rejected = matches!(outcome, Delivery::Rejected(_));
        let refused = matches!(outcome, Delivery::Refused(_));
        match outcome {
            Delivery::Deferred(reason, wait) => {
                metrics::counter!("notifications_total", "channel" => item.channel.clone(), "outcome" => "deferred").increment(1);
                tracing::info!(reason = %reason, "notification deferred");
                let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                let mut conn = self.connection().await?;
                repo::defer(&mut conn, item, &reason, wait_ms)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Delivery::Sent => {
                metrics::counter!("notifications_total", "channel" => item.channel.clone(), "outcome" => "sent").increment(1);
                tracing::info!(attempts, "notification sent");
                return Ok(true);
            }
            Delivery::Failed(error) | Delivery::Rejected(error) | Delivery::Refused(error) => {
                let patience = i64::try_from(self.settings.refused_patience_secs)
                    .ok()
                    .and_then(chrono::TimeDelta::try_seconds)
                    .unwrap_or(chrono::TimeDelta::MAX);
                let patient = refused && chrono::Utc::now() - item.created_at < patience;
                let give_up = rejected || (attempts >= self.settings.max_attempts && !patient);
                let outcome = if give_up { "failed" } else { "retried" };
                metrics::counter!("notifications_total", "channel" => item.channel.clone(), "outcome" => outcome).increment(1);
                tracing::warn!(attempts, error = %error, give_up, "notification not sent");
                let retry_in_ms = self.backoff(attempts);
                let mut conn = self.connection().await?;
                repo::mark_not_sent(&mut conn, item, attempts, &error, give_up, retry_in_ms)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(false)
    }

    /// Exponential backoff with jitter (between half and all of the ceiling), ms.
    fn backoff(&self, attempts: i32) -> i64 {
        let exponent = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        let ceiling = self
            .settings
            .retry_base_ms
            .saturating_mul(1u64 << exponent)
            .min(self.settings.retry_max_ms)
            .max(1);
        let millis = rand::thread_rng().gen_range(ceiling / 2..=ceiling);
        i64::try_from(millis).unwrap_or(i64::MAX)
    }
}

/// An email's text with every line break (CRLF, a lone CR, LF) made an LF,
/// which lettre sends as CRLF, dot-stuffing a line that begins with a dot.
/// A lone CR went to the relay as it came, outside that dot-stuffing: a
/// product name holding `"\r.\r\n"` ends the message early at a relay that
/// takes a lone CR for a line end, and what follows is read as commands
/// (SMTP smuggling). Names and other text in the bodies come from input.
fn as_lines(body: &str) -> String {
    body.replace("\r\n", "\n").replace('\r', "\n")
}

/// Whether the server refused the recipient's mailbox for good: a 550, 551
/// or 553 reply whose enhanced status code (RFC 3463) is about the
/// destination address (5.1.1 no such mailbox, 5.1.2 no such system, 5.1.3
/// bad syntax, 5.1.6 moved, 5.1.10 null MX). Every other 5xx (a failed
/// sign-in, a sender the relay refuses, TLS required) is the deployment's
/// to fix, so the message is tried again on the schedule meanwhile.
fn mailbox_refused(e: &lettre::transport::smtp::Error) -> bool {
    e.status()
        .is_some_and(|code| refused_for_good(&code.to_string(), &e.to_string()))
}

/// [`mailbox_refused`] on the reply's code and lettre's text of the error
/// (`permanent error (550): 5.1.1 no such mailbox`).
fn refused_for_good(code: &str, text: &str) -> bool {
    if !["550", "551", "553"].contains(&code) {
        return false;
    }
    let enhanced = text
        .split_once("): ")
        .and_then(|(_, reply)| reply.split_whitespace().next())
        .unwrap_or("");
    ["5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"].contains(&enhanced)
}

/// The origin of a webhook's URL (`https://hooks.example.com:443`), which
/// keys its breaker: the receiver's host and port, not its path or query
/// (which may hold a token, and would show in the breaker's logs). A URL
/// that does not parse is its own key; its send is refused before a call.
fn receiver_origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(url) => url.origin().ascii_serialization(),
        Err(_) => url.to_owned(),
    }
}

/// Where a claim's messages go: a webhook URL (each its own task), or the
/// email relay (one task for every address).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    Receiver(String),
    Relay,
}

/// A claim's messages by destination, each destination's in the claim's
/// order (oldest first, bulk email last), the destinations in the order of
/// their first.
fn by_destination(due: Vec<repo::Due>) -> Vec<(Destination, Vec<repo::Due>)> {
    let mut groups: Vec<(Destination, Vec<repo::Due>)> = Vec::new();
    for item in due {
        let destination = if item.channel == "email" {
            Destination::Relay
        } else {
            Destination::Receiver(item.destination.clone())
        };
        match groups.iter_mut().find(|(d, _)| *d == destination) {
            Some((_, items)) => items.push(item),
            None => groups.push((destination, vec![item])),
        }
    }
    groups
}

/// The destinations being sent to, by the task sending to them.
#[derive(Default)]
struct Busy {
    receivers: std::collections::HashMap<tokio::task::Id, String>,
    email: Option<tokio::task::Id>,
    /// Receivers whose last round was turned away by their breaker (or
    /// bulkhead), until when: left out of the claims till then, so their
    /// due messages are not claimed only to be deferred, round after round.
    blocked: std::collections::HashMap<String, std::time::Instant>,
}

impl Busy {
    fn insert(&mut self, task: tokio::task::Id, destination: Destination) {
        match destination {
            Destination::Receiver(url) => {
                self.receivers.insert(task, url);
            }
            Destination::Relay => self.email = Some(task),
        }
    }

    /// A send task ended: its destination is free again (or blocked until
    /// the time the task says).
    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, Option<std::time::Instant>), tokio::task::JoinError>,
    ) {
        let (id, blocked) = match done {
            Ok(ended) => ended,
            Err(e) => {
                // Its messages are sent again once their lease is over.
                tracing::error!(error = %e, "a notification send task failed");
                (e.id(), None)
            }
        };
        if let Some(url) = self.receivers.remove(&id)
            && let Some(until) = blocked
        {
            self.blocked.insert(url, until);
        }
        if self.email == Some(id) {
            self.email = None;
        }
    }

    /// The receivers blocked now; forgets those whose time is over.
    fn blocked(&mut self) -> impl Iterator<Item = &String> {
        let now = std::time::Instant::now();
        self.blocked.retain(|_, until| *until > now);
        self.blocked.keys()
    }
}

/// How one send went.
enum Delivery {
    Sent,
    /// Tried and failed: counts as an attempt.
    Failed(String),
    /// Tried and refused ([`Attempt::Refused`]): counts as an attempt, and
    /// is given up only past `refused_patience_secs` too.
    Refused(String),
    /// Can never go through: failed at once ([`Attempt::Rejected`]).
    Rejected(String),
    /// Not tried (breaker open, bulkhead full): again after the wait, free.
    Deferred(String, Duration),
}

/// A failed send, as the dependency's policy sees it.
enum Attempt {
    /// The other side answered no (a receiver's 3xx or 4xx): not its
    /// failure; tried again on the sender's schedule (a receiver's
    /// deployment may answer 404 for a while).
    Refused(String),
    /// No attempt can ever go through: the address cannot be written or its
    /// mailbox is refused for good ([`mailbox_refused`]), the subscription was
    /// deleted, the URL points inside the network. Failed at once: every
    /// further attempt would be refused the same way (and mail servers
    /// count the senders who keep trying).
    Rejected(String),
    /// The other side failed (unreachable, timed out, 5xx).
    Failed(String),
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Refused(e) | Attempt::Rejected(e) | Attempt::Failed(e) => f.write_str(e),
        }
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, keyed by the
/// subscription's secret. Receivers recompute it and reject stale timestamps.
pub(crate) fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receivers_breaker_is_keyed_by_its_origin_alone() {
        assert_eq!(
            receiver_origin("https://Hooks.Example.com/a/b?token=secret"),
            "https://hooks.example.com"
        );
        assert_eq!(
            receiver_origin("http://127.0.0.1:8080/hook"),
            receiver_origin("http://127.0.0.1:8080/other")
        );
        assert_ne!(
            receiver_origin("http://127.0.0.1:8080/hook"),
            receiver_origin("http://127.0.0.1:8081/hook")
        );
        assert_eq!(receiver_origin("not a url"), "not a url");
    }

    #[test]
    fn signatures_match_a_known_vector() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'whsec_test'
        assert_eq!(
            sign("whsec_test", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn only_a_mailbox_refused_for_good_ends_a_message() {
        for (code, text) in [
            ("550", "permanent error (550): 5.1.1 no such mailbox"),
            ("553", "permanent error (553): 5.1.3 bad address syntax"),
            ("550", "permanent error (550): 5.1.10 null MX"),
        ] {
            assert!(super::refused_for_good(code, text), "{text}");
        }
        for (code, text) in [
            ("535", "permanent error (535): 5.7.8 authentication failed"),
            ("550", "permanent error (550): 5.7.1 relaying denied"),
            ("553", "permanent error (553): 5.1.8 bad sender address"),
            ("550", "permanent error (550): mailbox unavailable"),
            (
                "530",
                "permanent error (530): 5.7.0 must issue STARTTLS first",
            ),
            ("550", "permanent error (550): 5.1.100 made up"),
        ] {
            assert!(!super::refused_for_good(code, text), "{text}");
        }
    }
}
