//! The relay: delivers a module's outbox, in order, exactly when it can.

use std::sync::Arc;
use std::time::Duration;

use diesel::dsl::now;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Double, Text};
use diesel_async::{
    AsyncConnection as _, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection as _,
};
use futures_util::StreamExt as _;
use kernel::Envelope;
use tokio::sync::watch;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::tables::outbox;
use crate::{Dispatcher, EventsSettings, Transport};

/// Delivers one module's outbox through a transport.
pub struct Relay {
    module: &'static str,
    pool: db::Pool,
    transport: Arc<dyn Transport>,
    batch_size: i64,
    poll_interval: Duration,
    /// How long a woken relay waits before it looks (`events.batch_window_ms`).
    batch_window: Duration,
    retention_hours: i64,
    prune_every: Duration,
    /// With the in-process transport: whom this instance hands the
    /// outbox's events to, kept in `relay_heartbeats` ([`Audience`]).
    audience: Option<Audience>,
}

/// How often an in-process relay writes its instance's heartbeat.
const BEAT: Duration = Duration::from_secs(5);

/// Who an in-process relay hands its outbox's events to: this instance,
/// and the `handler|event_type` pairs of its handlers that take them
/// (sorted). During a rolling upgrade of the monolith an older instance
/// would hand an event only to the handlers of the older binary and mark
/// it delivered, so a handler the newer binary adds would never see it. So
/// each in-process relay writes its pairs to `relay_heartbeats` every
/// [`BEAT`] (from its loop: a relay that stops making rounds stops
/// beating), live for three beats (or three polls, if longer: its own
/// interval, written with the row), and again in the transaction of any
/// batch that outlasts a beat, so the row is live when that batch's lock
/// is released; and it stands down while another live instance hands the
/// events to a strict superset of them. Two instances of
/// one binary have the same pairs and share the work as before; of two
/// whose pairs differ both ways (a handler added and one removed) neither
/// stands down, and a warning says so. Only the database's clock is used.
#[derive(Clone)]
struct Audience {
    instance: Uuid,
    pairs: Vec<String>,
    /// How long this instance's heartbeat counts as live, in seconds.
    live_secs: f64,
}

/// What a heartbeat found among the other live instances.
#[derive(diesel::QueryableByName, Clone, Copy, PartialEq, Eq)]
struct Beat {
    /// One hands the outbox's events to a strict superset of handlers.
    #[diesel(sql_type = Bool)]
    superseded: bool,
    /// One hands them to handlers this one lacks, and lacks some of this
    /// one's.
    #[diesel(sql_type = Bool)]
    incomparable: bool,
}

/// The condition on `relay_heartbeats` for "another live instance hands
/// the events to a strict superset of `$2`" (`$1` this instance).
const WIDER_LIVE: &str = "SELECT 1 FROM relay_heartbeats WHERE instance_id <> $1 \
     AND live_until > now() AND audience @> $2::text[] AND NOT ($2::text[] @> audience)";

#[derive(diesel::Queryable)]
struct Pending {
    id: Uuid,
    envelope: serde_json::Value,
}

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Opens `event`'s producer span, continuing the trace of the writer that
/// put it in the outbox; the event travels on with that span as its
/// parent, so its handlers join the same trace.
fn producer_span(mut event: Envelope) -> (Envelope, tracing::Span) {
    let span = tracing::info_span!(
        "event_publish",
        otel.name = %format_args!("publish {}", event.event_type),
        otel.kind = "producer",
        event.id = %event.id,
    );
    telemetry::trace::continue_trace(
        &span,
        event.traceparent.as_deref(),
        event.tracestate.as_deref(),
    );
    if let Some(trace) = span.in_scope(telemetry::trace::current) {
        event.traceparent = Some(trace.traceparent);
        event.tracestate = trace.tracestate;
    }
    (event, span)
}

/// Publishes `pending` in order as one batch, stopping at the first
/// failure (later events must not overtake it): the ids delivered, and the
/// failed one with its error.
async fn publish_in_order(
    transport: &dyn Transport,
    module: &'static str,
    pending: Vec<Pending>,
) -> (Vec<Uuid>, Option<(Uuid, String)>) {
    let mut ids = Vec::with_capacity(pending.len());
    let mut batch = Vec::with_capacity(pending.len());
    let mut failed = None;
    for row in pending {
        match serde_json::from_value::<Envelope>(row.envelope) {
            Ok(event) => {
                ids.push(row.id);
                batch.push(producer_span(event));
            }
            Err(e) => {
                failed = Some((row.id, format!("unreadable envelope: {e}")));
                break;
            }
        }
    }
    let delivered = match transport.publish_batch(&batch).await {
        Ok(()) => ids.len(),
        Err((index, error)) => {
            failed = ids.get(index).map(|id| (*id, error.0));
            index.min(ids.len())
        }
    };
    metrics::counter!("events_delivered_total", "module" => module, "transport" => transport.name())
        .increment(delivered as u64);
    ids.truncate(delivered);
    (ids, failed)
}

impl Relay {
    /// A relay for the outbox of `module`, reached through `pool` (whose
    /// connections' schema holds it). Woken by its module's writers in this
    /// process, by [`listen`] (a `NOTIFY` by hand) and by polling.
    pub fn new(
        module: &'static str,
        pool: db::Pool,
        transport: Arc<dyn Transport>,
        settings: &EventsSettings,
    ) -> Relay {
        Relay {
            module,
            pool,
            transport,
            batch_size: settings.batch_size.max(1),
            poll_interval: Duration::from_millis(settings.poll_interval_ms.max(10)),
            batch_window: Duration::from_millis(settings.batch_window_ms),
            retention_hours: i64::try_from(settings.retention_hours).unwrap_or(i64::MAX),
            prune_every: Duration::from_secs(settings.prune_interval_secs.max(1)),
            audience: None,
        }
    }

    /// For the in-process transport, whose relay hands events to
    /// `dispatcher`'s handlers: the relay keeps this `instance`'s heartbeat
    /// and stands down while another live instance's handlers of this
    /// outbox's events are a strict superset of these ([`Audience`]), as a
    /// newer binary's are during a rolling upgrade that adds a handler. The
    /// outbox's events are those whose type starts with `<module>.`.
    #[must_use]
    pub fn beside_other_instances(mut self, instance: Uuid, dispatcher: &Dispatcher) -> Relay {
        let module = self.module;
        let mut pairs: Vec<String> = dispatcher
            .subscriptions()
            .iter()
            .flat_map(|s| {
                s.event_types
                    .iter()
                    .filter(|t| t.split('.').next() == Some(module))
                    .map(move |t| format!("{}|{t}", s.name))
            })
            .collect();
        pairs.sort();
        pairs.dedup();
        let live = BEAT.max(self.poll_interval).saturating_mul(3);
        self.audience = Some(Audience {
            instance,
            pairs,
            live_secs: live.as_secs_f64(),
        });
        self
    }

    /// Writes this instance's heartbeat ([`Audience`]) and reads what the
    /// other live instances hand this outbox's events to.
    async fn beat(&self, audience: &Audience) -> Result<Beat, String> {
        let mut conn = db::connection(&self.pool, self.module)
            .await
            .map_err(|e| e.to_string())?;
        // Raw: a data-modifying CTE and array containment.
        db::sql(format!(
            "WITH beat AS (INSERT INTO relay_heartbeats (instance_id, audience, live_until) \
             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3)) \
             ON CONFLICT (instance_id) DO UPDATE \
             SET audience = EXCLUDED.audience, live_until = EXCLUDED.live_until) \
             SELECT EXISTS ({WIDER_LIVE}) AS superseded, \
             EXISTS (SELECT 1 FROM relay_heartbeats WHERE instance_id <> $1 AND live_until > now() \
                     AND NOT (audience @> $2::text[]) AND NOT ($2::text[] @> audience)) AS incomparable"
        ))
        .bind::<diesel::sql_types::Uuid, _>(audience.instance)
        .bind::<Array<Text>, _>(&audience.pairs)
        .bind::<Double, _>(audience.live_secs)
        .get_result(&mut conn)
        .await
        .map_err(|e| e.to_string())
    }

    /// Counts and logs a heartbeat's finding when it changed.
    fn heard(&self, beat: Beat, before: Option<Beat>) {
        metrics::gauge!("events_relay_standing_down", "module" => self.module)
            .set(if beat.superseded { 1.0 } else { 0.0 });
        if before == Some(beat) {
            return;
        }
        if beat.superseded {
            tracing::info!(
                module = self.module,
                "another live instance hands this outbox's events to more handlers \
                 (a newer version, in a rolling upgrade): this relay stands down"
            );
        } else if before.is_some_and(|b| b.superseded) {
            tracing::info!(module = self.module, "this relay delivers again");
        }
        if beat.incomparable {
            tracing::warn!(
                module = self.module,
                "another live instance hands this outbox's events to handlers this one \
                 lacks, and lacks some of this one's: both relay, and each event reaches \
                 only the handlers of the instance that relays it"
            );
        }
    }

    /// Deletes this instance's heartbeat (a clean stop), so an older
    /// instance standing down delivers again at once.
    async fn last_beat(&self, audience: &Audience) {
        let Ok(mut conn) = db::connection(&self.pool, self.module).await else {
            return;
        };
        let gone = db::sql("DELETE FROM relay_heartbeats WHERE instance_id = $1")
            .bind::<diesel::sql_types::Uuid, _>(audience.instance)
            .execute(&mut conn)
            .await;
        if let Err(e) = gone {
            tracing::warn!(module = self.module, error = %e, "cannot delete the relay's heartbeat");
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let wake = crate::outbox::subscribe(self.module);
        // Pruning has a task of its own: a week of rows takes many batches,
        // and the relay delivers meanwhile.
        let pruner = tokio::spawn(prune_every(
            self.module,
            self.pool.clone(),
            self.retention_hours,
            self.prune_every,
            stop.clone(),
        ));
        tracing::info!(
            module = self.module,
            transport = self.transport.name(),
            "relay started"
        );
        let mut next_beat = tokio::time::Instant::now();
        let mut heard = None;
        // Whether a heartbeat was ever written: until one is (a database
        // whose migrations have not run yet has no `relay_heartbeats`), the
        // relay delivers as it did before heartbeats, without standing down.
        // Once one was, the table is there for good: a later beat that fails
        // (a pool's wait, a connection reset) must not stop the relay from
        // standing down, or for a beat it would hand a newer instance's
        // events to its own handlers only.
        let mut beaten = false;
        loop {
            if let Some(audience) = &self.audience
                && tokio::time::Instant::now() >= next_beat
            {
                match self.beat(audience).await {
                    Ok(beat) => {
                        self.heard(beat, heard);
                        heard = Some(beat);
                        beaten = true;
                    }
                    Err(e) => {
                        if heard.is_some() || !beaten {
                            tracing::warn!(
                                module = self.module,
                                error = %e,
                                standing_down_still_checked = beaten,
                                "relay heartbeat failed"
                            );
                        }
                        heard = None;
                    }
                }
                next_beat = tokio::time::Instant::now() + BEAT;
            }
            // The batch writes the heartbeat again only when the last beat
            // was written: a write that fails for good (a trigger, a full
            // disk) would roll back a batch already published.
            let beating = heard.is_some();
            let delivered = match self.deliver_batch(next_beat, beaten, beating).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(module = self.module, error = %e, "relay round failed");
                    0
                }
            };
            if delivered >= self.batch_size && !*stop.borrow() {
                continue;
            }
            tokio::select! {
                () = wake.notified() => tokio::time::sleep(self.batch_window).await,
                () = tokio::time::sleep(self.poll_interval) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
        }
        if let Some(audience) = &self.audience {
            self.last_beat(audience).await;
        }
        drop(pruner.await);
        tracing::info!(module = self.module, "relay stopped");
    }

    /// Delivers up to a batch of events in `seq` order. Only one relay per
    /// schema works at a time (a transaction-scoped advisory lock), so events
    /// of one aggregate never overtake each other, however many instances run.
    ///
    /// With an [`Audience`] whose heartbeat was ever written (`beaten`: the
    /// table is there), the batch first checks that no wider audience's
    /// relay is live, even when this instance's last beat failed; while
    /// the last beat was written (`beating`), a batch still
    /// running at `beat_due` writes the heartbeat again before it commits:
    /// its lock held the older relays off, and they must find it live when
    /// the lock goes.
    async fn deliver_batch(
        &self,
        beat_due: tokio::time::Instant,
        beaten: bool,
        beating: bool,
    ) -> Result<i64, String> {
        let mut conn = db::connection(&self.pool, self.module)
            .await
            .map_err(|e| e.to_string())?;
        let transport = Arc::clone(&self.transport);
        let module = self.module;
        let batch = self.batch_size;
        let audience = self.audience.as_ref().filter(|_| beaten);
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            // Raw: a PostgreSQL function on the schema's name, no table.
            // Its own statement, before the SELECT: the SELECT's snapshot
            // must be taken with the lock held, or a batch another relay
            // delivered just before could still read as pending.
            const LOCK: &str =
                "pg_try_advisory_xact_lock(hashtext('shop_outbox_' || current_schema()))";
            let lock: Locked = match audience {
                None => db::sql(format!("SELECT {LOCK} AS locked")).get_result(conn).await?,
                // In the same statement, so it costs no round trip: stand
                // down, without taking the lock, while a wider audience's
                // relay runs ([`Audience`]).
                Some(audience) => {
                    db::sql(format!(
                        "SELECT CASE WHEN EXISTS ({WIDER_LIVE}) THEN false ELSE {LOCK} END AS locked"
                    ))
                    .bind::<diesel::sql_types::Uuid, _>(audience.instance)
                    .bind::<Array<Text>, _>(&audience.pairs)
                    .get_result(conn)
                    .await?
                }
            };
            if !lock.locked {
                return Ok(0);
            }
            let pending: Vec<Pending> = outbox::table
                .filter(outbox::delivered_at.is_null())
                .order(outbox::seq)
                .limit(batch)
                .select((outbox::id, outbox::envelope))
                .load(conn)
                .await?;
            if pending.is_empty() {
                return Ok(0);
            }
            // A root span per batch; each event's publish joins its own trace.
            let batch_span = tracing::info_span!(
                "outbox_relay",
                otel.name = "relay batch",
                module,
                events = pending.len(),
            );
            let (delivered, failed) = publish_in_order(transport.as_ref(), module, pending)
                .instrument(batch_span)
                .await;
            if let Some((id, error)) = failed {
                diesel::update(outbox::table.find(id))
                    .set((
                        outbox::attempts.eq(outbox::attempts + 1),
                        outbox::last_error.eq(&error),
                    ))
                    .execute(conn)
                    .await?;
                tracing::warn!(module, event.id = %id, error = %error, "delivery failed; will retry");
            }
            // Marked in one statement, committed with the batch.
            if !delivered.is_empty() {
                diesel::update(outbox::table.filter(outbox::id.eq_any(&delivered)))
                    .set((
                        outbox::delivered_at.eq(now),
                        outbox::attempts.eq(outbox::attempts + 1),
                    ))
                    .execute(conn)
                    .await?;
            }
            if let Some(audience) = audience
                && beating
                && tokio::time::Instant::now() >= beat_due
            {
                db::sql(
                    "UPDATE relay_heartbeats \
                     SET live_until = clock_timestamp() + make_interval(secs => $2) \
                     WHERE instance_id = $1",
                )
                .bind::<diesel::sql_types::Uuid, _>(audience.instance)
                .bind::<Double, _>(audience.live_secs)
                .execute(conn)
                .await?;
            }
            let delivered = i64::try_from(delivered.len()).unwrap_or(i64::MAX);
            Ok(delivered)
        })
        .await
        .map_err(|e| e.to_string())
    }
}

/// Rows a prune deletes per statement.
const PRUNE_BATCH: i64 = 5000;

/// Every `every`, until `stop` turns true, deletes the delivered outbox
/// rows and the inbox rows older than `retention_hours`, and the dead
/// letters redriven that long ago.
async fn prune_every(
    module: &'static str,
    pool: db::Pool,
    retention_hours: i64,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = prune(module, &pool, retention_hours, &stop).await {
            tracing::warn!(module, error = %e, "pruning failed");
        }
    }
}

/// One prune, in batches of [`PRUNE_BATCH`] rows by primary key: event ids
/// are UUID v7, time first, so every row old enough lies below the id of
/// the retention's instant and the key's index bounds each batch. One
/// `DELETE` of a week's rows read the whole table and ran into the
/// statement timeout, deleting nothing, every time.
async fn prune(
    module: &'static str,
    pool: &db::Pool,
    retention_hours: i64,
    stop: &watch::Receiver<bool>,
) -> Result<(), String> {
    let mut conn = db::connection(pool, module)
        .await
        .map_err(|e| e.to_string())?;
    let age_ms = retention_hours.saturating_mul(3_600_000);
    let cutoff_ms = chrono::Utc::now()
        .timestamp_millis()
        .saturating_sub(age_ms)
        .max(0);
    // The highest id of that millisecond: every id made before it is lower.
    let v7_of = |ms: i64| {
        uuid::Builder::from_unix_timestamp_millis(u64::try_from(ms).unwrap_or(0), &[0xff; 10])
            .into_uuid()
    };
    let cutoff = v7_of(cutoff_ms);
    let beyond_v7 = v7_of(
        chrono::Utc::now()
            .timestamp_millis()
            .saturating_add(86_400_000),
    );
    // Below the retention's instant by key; then the ids that are not UUID
    // v7 (a few older rows made with random ids), which lie anywhere in the
    // key's range, nearly all of them above any time this century: above
    // tomorrow's ids, where no v7 id is yet, the key's index holds only
    // those.
    for (table, key, age) in [
        ("outbox", "id", "delivered_at"),
        ("inbox", "event_id", "handled_at"),
    ] {
        let mut pruned = 0;
        for (side, bound) in [("<", cutoff), (">", beyond_v7)] {
            // Raw: `ctid` and the age on the database's clock, which the
            // query builder has no form for.
            let sql = format!(
                "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} \
                 WHERE {key} {side} $1 AND {age} < now() - make_interval(hours => $2::int) \
                 ORDER BY {key} LIMIT {PRUNE_BATCH})"
            );
            loop {
                let n = db::sql(sql.as_str())
                    .bind::<diesel::sql_types::Uuid, _>(bound)
                    .bind::<BigInt, _>(retention_hours)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| format!("{table}: {e}"))?;
                pruned += n;
                if i64::try_from(n).unwrap_or(i64::MAX) < PRUNE_BATCH || *stop.borrow() {
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(module, table, rows = pruned, "pruned old messaging rows");
        }
    }
    // Heartbeats of instances long gone (one that stops cleanly deletes its own).
    db::sql("DELETE FROM relay_heartbeats WHERE live_until < now() - interval '1 day'")
        .execute(&mut conn)
        .await
        .map_err(|e| format!("relay_heartbeats: {e}"))?;
    // Dead letters an operator redrove (a few); open ones stay until one does.
    let redriven = db::sql(
        "DELETE FROM dead_letters WHERE redriven_at < now() - make_interval(hours => $1::int)",
    )
    .bind::<BigInt, _>(retention_hours)
    .execute(&mut conn)
    .await
    .map_err(|e| format!("dead_letters: {e}"))?;
    if redriven > 0 {
        tracing::info!(
            module,
            table = "dead_letters",
            rows = redriven,
            "pruned old messaging rows"
        );
    }
    Ok(())
}

/// Keeps one LISTEN connection to the database at `url` for the relays of
/// every module in `modules` (name and schema) whose outbox is there, and
/// wakes a module's relays (`outbox::wake`) on each `NOTIFY
/// shop_outbox_<schema>`; reconnects after failures, until `stop` turns
/// true. Writers do not `NOTIFY` (they wake their relays in process, ADR
/// 0015): this is for a `NOTIFY` sent by hand, and polling covers any gap.
/// One connection per database, not one per module: in a monolith the six
/// relays share one backend.
pub async fn listen(
    url: String,
    modules: Vec<(&'static str, &'static str)>,
    mut stop: watch::Receiver<bool>,
) {
    let statement = modules
        .iter()
        .map(|(_, schema)| format!("LISTEN shop_outbox_{schema};"))
        .collect::<String>();
    while !*stop.borrow() {
        match AsyncPgConnection::establish(&url).await {
            Ok(mut conn) => {
                if let Err(e) = conn.batch_execute(&statement).await {
                    tracing::warn!(error = %e, "LISTEN failed");
                } else {
                    let mut notifications = std::pin::pin!(conn.notifications_stream());
                    loop {
                        tokio::select! {
                            notification = notifications.next() => {
                                let Some(Ok(notification)) = notification else { break };
                                let woken = modules.iter().find(|(_, schema)| {
                                    notification.channel.strip_prefix("shop_outbox_") == Some(schema)
                                });
                                if let Some((module, _)) = woken {
                                    crate::outbox::wake(module);
                                }
                            }
                            _ = stop.changed() => return,
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "LISTEN connection failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}
