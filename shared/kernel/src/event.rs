//! Integration events: the envelope every event travels in, and the trait
//! that event payloads (defined in the publishing module's `-api` crate)
//! implement.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::CallContext;

/// A payload type published by a module.
///
/// Payloads are wire contracts: add optional fields, never rename or remove
/// one; a breaking change is a new type with the next version (`.v2`).
pub trait IntegrationEvent: Serialize + DeserializeOwned {
    /// Unique type with version: `catalog.product_created.v1`.
    const TYPE: &'static str;
    /// The aggregate the event is about; events of one aggregate are
    /// delivered in the order they were published.
    fn aggregate_id(&self) -> String;
}

/// An event on the wire: metadata plus the JSON payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique event id (UUID v7); handlers deduplicate on it.
    pub id: Uuid,
    /// `<module>.<event>.v<version>`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The publishing module.
    pub source: String,
    /// The aggregate the event is about.
    pub aggregate_id: String,
    /// When the state change happened.
    pub occurred_at: DateTime<Utc>,
    /// The request that caused it, if any.
    pub request_id: Option<String>,
    /// The event whose handling caused it, if any.
    pub causation_id: Option<Uuid>,
    /// The event itself.
    pub payload: serde_json::Value,
    /// W3C `traceparent` of the span that published it, when traces are
    /// on: its handlers continue that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// W3C `tracestate` that goes with `traceparent`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl Envelope {
    /// Wraps `event`, published by `source` in the context `cx`.
    ///
    /// # Errors
    /// When the payload does not serialise (not expected for plain data).
    pub fn new<E: IntegrationEvent>(
        source: &str,
        cx: &CallContext,
        event: &E,
    ) -> Result<Envelope, serde_json::Error> {
        let payload = serde_json::to_value(event)?;
        Ok(Envelope::with_payload::<E>(
            source,
            cx,
            event.aggregate_id(),
            payload,
        ))
    }

    /// An envelope for an `E` about `aggregate_id`, published by `source`
    /// in the context `cx`, with `payload` as given: for an event whose
    /// payload the statement that writes it fills in (`null` until then).
    pub fn with_payload<E: IntegrationEvent>(
        source: &str,
        cx: &CallContext,
        aggregate_id: String,
        payload: serde_json::Value,
    ) -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            event_type: E::TYPE.to_owned(),
            source: source.to_owned(),
            aggregate_id,
            occurred_at: Utc::now(),
            request_id: Some(cx.request_id().to_string()),
            causation_id: cx.causation_id(),
            payload,
            traceparent: None,
            tracestate: None,
        }
    }

    /// The payload as `E`.
    ///
    /// # Errors
    /// When the type differs or the payload does not match `E`.
    pub fn payload<E: IntegrationEvent>(&self) -> Result<E, String> {
        if self.event_type != E::TYPE {
            return Err(format!("expected {}, got {}", E::TYPE, self.event_type));
        }
        serde_json::from_value(self.payload.clone()).map_err(|e| format!("{}: {e}", E::TYPE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Happened {
        thing: String,
    }

    impl IntegrationEvent for Happened {
        const TYPE: &'static str = "test.happened.v1";
        fn aggregate_id(&self) -> String {
            self.thing.clone()
        }
    }

    #[test]
    fn envelopes_carry_request_and_causation() {
        let cx = CallContext::for_request(crate::RequestId::parse("req-1").unwrap());
        let first = Envelope::new("test", &cx, &Happened { thing: "a".into() }).unwrap();
        assert_eq!(first.request_id.as_deref(), Some("req-1"));
        assert_eq!(first.causation_id, None);
        let caused = CallContext::for_event(&first);
        let second = Envelope::new("test", &caused, &Happened { thing: "b".into() }).unwrap();
        assert_eq!(second.request_id.as_deref(), Some("req-1"));
        assert_eq!(second.causation_id, Some(first.id));
        assert_eq!(
            second.payload::<Happened>().unwrap(),
            Happened { thing: "b".into() }
        );
        let json = serde_json::to_value(&second).unwrap();
        assert_eq!(json["type"], "test.happened.v1");
    }
}
