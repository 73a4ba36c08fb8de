//! Publishing: the one way a module announces a state change.

use diesel::sql_types::{Jsonb, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kernel::{CallContext, Envelope, IntegrationEvent};
use uuid::Uuid;

/// Writes `event` into the outbox of the connection's module schema. Call it
/// inside the transaction that makes the change, so both commit or neither.
///
/// # Errors
/// Database errors (the caller's transaction then rolls back).
pub async fn publish<E: IntegrationEvent>(
    conn: &mut AsyncPgConnection,
    source: &str,
    cx: &CallContext,
    event: &E,
) -> diesel::QueryResult<Uuid> {
    let envelope = Envelope::new(source, cx, event)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    let json = serde_json::to_value(&envelope)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    diesel::sql_query(
        "INSERT INTO outbox (id, event_type, aggregate_id, envelope) VALUES ($1, $2, $3, $4)",
    )
    .bind::<SqlUuid, _>(envelope.id)
    .bind::<Text, _>(&envelope.event_type)
    .bind::<Text, _>(&envelope.aggregate_id)
    .bind::<Jsonb, _>(json)
    .execute(conn)
    .await?;
    tracing::debug!(event.id = %envelope.id, event.type = %envelope.event_type, "event written to the outbox");
    Ok(envelope.id)
}
