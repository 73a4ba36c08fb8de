//! What a message carries in its AMQP headers besides the event: this
//! deployment's signature of the body (ADR 0018), and the trace context.

use kernel::Envelope;
use lapin::types::{AMQPValue, FieldTable};

use super::RabbitMq;
use crate::TransportError;

/// The header carrying the message's signature (`auth::EventSeal`).
const SIGNATURE: &str = "x-shop-signature";

impl RabbitMq {
    /// The headers of `event`'s message: its signature of `payload`, and
    /// its trace context.
    pub(super) fn headers(
        &self,
        event: &Envelope,
        payload: &[u8],
    ) -> Result<FieldTable, TransportError> {
        let mut headers = trace_headers(event);
        let signature = self
            .seal
            .sign(payload)
            .map_err(|e| TransportError(format!("cannot sign the event: {e}")))?;
        headers.insert(
            SIGNATURE.into(),
            AMQPValue::LongString(signature.as_str().into()),
        );
        Ok(headers)
    }

    /// Whether `delivery` carries this deployment's signature of its body.
    pub(super) fn sealed(&self, delivery: &lapin::message::Delivery) -> bool {
        let signature = delivery.properties.headers().as_ref().and_then(|headers| {
            match headers.inner().get(SIGNATURE) {
                Some(AMQPValue::LongString(value)) => Some(value.to_string()),
                _ => None,
            }
        });
        signature.is_some_and(|signature| self.seal.verify(&delivery.data, &signature))
    }
}

/// The AMQP headers carrying `event`'s trace context (W3C names).
fn trace_headers(event: &Envelope) -> FieldTable {
    let mut headers = FieldTable::default();
    let pairs = [
        (telemetry::trace::TRACEPARENT, event.traceparent.as_deref()),
        (telemetry::trace::TRACESTATE, event.tracestate.as_deref()),
    ];
    for (name, value) in pairs {
        if let Some(value) = value {
            headers.insert(name.into(), AMQPValue::LongString(value.into()));
        }
    }
    headers
}
