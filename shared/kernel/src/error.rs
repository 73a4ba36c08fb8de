//! Error vocabulary shared by every module's error type and the web layer.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One invalid field of a request, reported in a 422 problem's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// JSON path of the field (`price.currency`).
    pub field: String,
    /// What is wrong with it, for a person.
    pub message: String,
}

impl FieldError {
    /// An error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What the plumbing beneath a module needs of its error type: a way to
/// say "cannot answer now" (503, worth a retry) and "something unexpected
/// happened" (500, a bug; the details go to the logs). Every module error
/// has it, through the [`Failure`](crate::Failure) it embeds, so one mapping
/// of database failures (`db::failure`) and one transaction abort
/// (`db::Abort`) serve them all.
pub trait ModuleError: Sized {
    /// The module cannot answer now, for `reason` (its database is down or
    /// too slow).
    fn unavailable(reason: String) -> Self;
    /// Something that should not happen did; `detail` is for the logs.
    fn unexpected(detail: String) -> Self;
}

impl<E: From<crate::Failure>> ModuleError for E {
    fn unavailable(reason: String) -> E {
        crate::Failure::Unavailable(reason).into()
    }

    fn unexpected(detail: String) -> E {
        crate::Failure::Unexpected(detail).into()
    }
}

/// How a module error presents itself as an RFC 9457 problem.
///
/// Implemented by every `-api` error enum; the web layer turns it into an
/// `application/problem+json` response and the HTTP clients turn such a
/// response back into the same variant, so callers see one error type
/// whichever side of the wire the module runs on.
pub trait ProblemCode: std::error::Error {
    /// HTTP status code.
    fn status(&self) -> u16;
    /// Stable machine-readable code (`product_not_found`); part of the API.
    fn code(&self) -> &'static str;
    /// The shared [`Failure`](crate::Failure) this error is, if it is one
    /// (a module error's `Common` variant).
    fn failure(&self) -> Option<&crate::Failure> {
        None
    }

    /// Seconds the client should wait before retrying (`Retry-After`), if
    /// known; by default the failure's.
    fn retry_after(&self) -> Option<u64> {
        self.failure().and_then(crate::Failure::retry_after)
    }

    /// Field errors carried in the problem's `errors` (422 responses, and
    /// any other error that lists items, such as short SKUs); by default
    /// the failure's.
    fn field_errors(&self) -> Vec<FieldError> {
        self.failure()
            .map(crate::Failure::field_errors)
            .unwrap_or_default()
    }

    /// The resource's current status, when the error refuses a change of
    /// status (the problem's `current_status`).
    fn current_status(&self) -> Option<&'static str> {
        None
    }

    /// The card network's reason for refusing a card (the problem's
    /// `decline_code`).
    fn decline_code(&self) -> Option<String> {
        None
    }
}

/// The body of an `application/problem+json` response (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProblemBody {
    /// Stable URI of the problem type: `urn:shop:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine-readable code, the last part of `type`.
    pub code: String,
    /// The request id of the failed request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Invalid fields (422), or the items a conflict is about (409
    /// `insufficient_stock`: one entry per short SKU, `field` = `sku`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The resource's current status when a 409 refuses a change of status
    /// (`invalid_payment_transition`: a payment status;
    /// `invalid_reservation_transition`: a reservation status). Callers
    /// branch on this member, never on `detail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "captured")]
    pub current_status: Option<String>,
    /// Why the card was refused, as the card network says it (402
    /// `payment_declined` and `card_rejected`): `card_declined`,
    /// `insufficient_funds`, `incorrect_number`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "insufficient_funds")]
    pub decline_code: Option<String>,
}

impl ProblemBody {
    /// Content type of problem responses.
    pub const CONTENT_TYPE: &'static str = "application/problem+json";

    /// A problem of `status` with the stable `code`.
    pub fn new(status: u16, code: &str, title: &str, detail: Option<String>) -> ProblemBody {
        ProblemBody {
            type_uri: format!("urn:shop:problem:{code}"),
            title: title.to_owned(),
            status,
            detail,
            code: code.to_owned(),
            request_id: None,
            errors: Vec::new(),
            current_status: None,
            decline_code: None,
        }
    }
}

/// How a call to a module in another process was cut short by the
/// resilience policy, rather than answered. Every `-api` error has a
/// variant carrying it; at the edge it is a 503 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Degradation {
    /// The circuit breaker is open: the module is failing; no call was made.
    CircuitOpen {
        /// Seconds until trial calls are let through.
        retry_after_secs: u64,
    },
    /// Too many calls to the module are in flight; no call was made.
    Overloaded,
    /// The caller's time ran out.
    DeadlineExceeded,
}

impl Degradation {
    /// Stable code in problem responses.
    pub fn code(self) -> &'static str {
        match self {
            Degradation::CircuitOpen { .. } => "dependency_circuit_open",
            Degradation::Overloaded => "dependency_overloaded",
            Degradation::DeadlineExceeded => "deadline_exceeded",
        }
    }

    /// Seconds to wait before retrying.
    pub fn retry_after(self) -> u64 {
        match self {
            Degradation::CircuitOpen { retry_after_secs } => retry_after_secs.max(1),
            Degradation::Overloaded => 1,
            Degradation::DeadlineExceeded => 1,
        }
    }

    /// The degradation a problem with `code` reports, if any.
    pub fn from_code(code: &str, retry_after_secs: u64) -> Option<Degradation> {
        match code {
            "dependency_circuit_open" => Some(Degradation::CircuitOpen { retry_after_secs }),
            "dependency_overloaded" => Some(Degradation::Overloaded),
            "deadline_exceeded" => Some(Degradation::DeadlineExceeded),
            _ => None,
        }
    }
}

impl std::fmt::Display for Degradation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Degradation::CircuitOpen { retry_after_secs } => {
                write!(
                    f,
                    "the module is failing; calls resume in {retry_after_secs} s"
                )
            }
            Degradation::Overloaded => f.write_str("too many calls to the module are in flight"),
            Degradation::DeadlineExceeded => f.write_str("the call ran out of time"),
        }
    }
}
