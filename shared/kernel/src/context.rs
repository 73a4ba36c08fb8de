//! The context every cross-module call carries: request id and deadline.

use std::fmt;
use std::time::{Duration, Instant};

use crate::Caller;

/// Correlates every log line, remote call and event caused by one request.
///
/// Taken from the `x-request-id` header when a client sends a sane one
/// (1 to 128 visible ASCII characters), generated (UUID v7) otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// Longest request id accepted from outside.
    pub const MAX_LEN: usize = 128;

    /// A fresh, time-ordered request id.
    pub fn generate() -> RequestId {
        RequestId(uuid::Uuid::now_v7().to_string())
    }

    /// Accepts a client-supplied id if it is safe to log and forward.
    pub fn parse(raw: &str) -> Option<RequestId> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| RequestId(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a caller hands to another module with every call.
///
/// In-process implementations read the verified [`Caller`] to authorise;
/// the HTTP clients turn the context into headers (`x-request-id`,
/// `authorization` with the caller's token) and a timeout, and the remote
/// side verifies the token itself.
#[derive(Clone)]
pub struct CallContext {
    request_id: RequestId,
    deadline: Option<Instant>,
    caller: Option<Caller>,
    bearer_token: Option<String>,
    causation_id: Option<uuid::Uuid>,
}

impl fmt::Debug for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a credential: never print it.
        f.debug_struct("CallContext")
            .field("request_id", &self.request_id)
            .field("deadline", &self.deadline)
            .field("caller", &self.caller)
            .field("causation_id", &self.causation_id)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl CallContext {
    /// A context for work that is not caused by a request (jobs, CLI, tests).
    pub fn background() -> CallContext {
        CallContext {
            request_id: RequestId::generate(),
            deadline: None,
            caller: None,
            bearer_token: None,
            causation_id: None,
        }
    }

    /// A context for a call made on behalf of the request `request_id`.
    pub fn for_request(request_id: RequestId) -> CallContext {
        CallContext {
            request_id,
            deadline: None,
            caller: None,
            bearer_token: None,
            causation_id: None,
        }
    }

    /// A context for work caused by handling `event`: same request id, the
    /// event as cause.
    pub fn for_event(event: &crate::Envelope) -> CallContext {
        let request_id = event
            .request_id
            .as_deref()
            .and_then(RequestId::parse)
            .unwrap_or_else(RequestId::generate);
        let mut cx = CallContext::for_request(request_id);
        cx.causation_id = Some(event.id);
        cx
    }

    /// The event whose handling this call is part of.
    pub fn causation_id(&self) -> Option<uuid::Uuid> {
        self.causation_id
    }

    /// The same context with a deadline `timeout` from now (an earlier
    /// deadline already set is kept: a deadline only ever shrinks).
    pub fn with_timeout(mut self, timeout: Duration) -> CallContext {
        let candidate = Instant::now() + timeout;
        self.deadline = Some(match self.deadline {
            Some(existing) if existing < candidate => existing,
            _ => candidate,
        });
        self
    }

    /// The same context carrying the caller's bearer token, forwarded to
    /// remote modules so they authorise the original caller.
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> CallContext {
        self.bearer_token = Some(token.into());
        self
    }

    /// The same context on behalf of the verified `caller`.
    pub fn with_caller(mut self, caller: Caller) -> CallContext {
        self.caller = Some(caller);
        self
    }

    /// The verified caller, if the request was authenticated.
    pub fn caller(&self) -> Option<&Caller> {
        self.caller.as_ref()
    }

    /// The request this call belongs to.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// The caller's bearer token, if any.
    pub fn bearer_token(&self) -> Option<&str> {
        self.bearer_token.as_deref()
    }

    /// The header a module call carries its deadline in: the milliseconds
    /// left when it was sent. The callee takes it from the shop's own calls
    /// only (a service token), never from a client.
    pub const DEADLINE_HEADER: &'static str = "x-shop-deadline-ms";

    /// The longest deadline a callee takes from [`Self::DEADLINE_HEADER`].
    pub const MAX_RECEIVED_DEADLINE: Duration = Duration::from_secs(300);

    /// Time left before the deadline (`None`: no deadline; zero: expired).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_rejects_unsafe_input() {
        assert!(RequestId::parse("abc-123").is_some());
        assert!(RequestId::parse("").is_none());
        assert!(RequestId::parse("has space").is_none());
        assert!(RequestId::parse("line\nbreak").is_none());
        assert!(RequestId::parse(&"a".repeat(129)).is_none());
        assert!(RequestId::parse(&"a".repeat(128)).is_some());
    }

    #[test]
    fn deadline_only_shrinks() {
        let cx = CallContext::background().with_timeout(Duration::from_millis(50));
        let cx = cx.with_timeout(Duration::from_secs(60));
        assert!(cx.remaining().unwrap() <= Duration::from_millis(50));
    }
}
