//! The card provider seam: [`PaymentProvider`], and [`HttpProvider`], its
//! implementation for a provider with the sandbox's HTTP API
//! (`payment_sandbox`, ADR 0012). A real provider is another implementation
//! of the trait.
//!
//! Every call runs under the `payment` resilience policy. All five calls are
//! safe to retry: an authorization carries an idempotency key derived from
//! the order, capture, void and refund are no-ops when already done, and
//! reading an authorization changes nothing.
//!
//! Only the API's own refusals are refusals: 400, 402, 404, 409 or 422
//! with its error body and a code of its form (`card_declined`). Any other
//! answer (a redirect, 401/403, a proxy's page, 408, an id that is not of
//! the provider's form, more than 64 KiB) leaves the outcome unknown and
//! is unavailability: a payment is never recorded declined for it.

use std::sync::Arc;
use tracing::Instrument as _;

use kernel::{Degradation, Money};
use reqwest::{Method, StatusCode};
use resilience::{Policy, PolicyError, Verdict};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

/// An authorization as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProviderAuthorization {
    /// The provider's id for it.
    pub id: String,
    /// `authorized`, `captured`, `voided` or `refunded`.
    pub status: String,
    /// Amount held, minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The card's last four digits.
    pub card_last4: String,
}

/// A card kept by the provider, named by a token the shop may store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProviderPaymentMethod {
    /// The token (`pm_...`).
    pub id: String,
    /// The card's last four digits.
    pub card_last4: String,
}

/// Why the provider did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The card was refused (`card_declined`, `insufficient_funds`...).
    #[error("the card was declined: {code}")]
    Declined {
        /// The provider's reason.
        code: String,
    },
    /// The request was refused (bad state, unknown authorization, bad input).
    #[error("the payment provider refused: {code}")]
    Rejected {
        /// The provider's reason.
        code: String,
    },
    /// The provider could not be reached or failed; the outcome is unknown
    /// until the same call is repeated (it is idempotent).
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
    /// The policy stopped the call (breaker open, bulkhead full, deadline).
    #[error("the payment provider is degraded: {0}")]
    Degraded(Degradation),
}

/// A card payment provider.
#[async_trait::async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Hands the card to the provider; the token answered stands for it
    /// from then on (the shop never stores the number).
    async fn tokenize(&self, card_number: &str) -> Result<ProviderPaymentMethod, ProviderError>;
    /// Holds `amount` on the card behind `payment_method`. `key` makes the
    /// call idempotent: the same key and request always answer the same
    /// authorization.
    async fn authorize(
        &self,
        key: &str,
        amount: Money,
        payment_method: &str,
    ) -> Result<ProviderAuthorization, ProviderError>;
    /// Takes the held amount.
    async fn capture(&self, id: &str) -> Result<ProviderAuthorization, ProviderError>;
    /// Releases the hold.
    async fn void(&self, id: &str) -> Result<ProviderAuthorization, ProviderError>;
    /// Gives a captured amount back.
    async fn refund(&self, id: &str) -> Result<ProviderAuthorization, ProviderError>;
    /// The authorization as the provider has it now (Stripe: retrieve the
    /// PaymentIntent): what reconciles a move whose answer was lost.
    async fn authorization(&self, id: &str) -> Result<ProviderAuthorization, ProviderError>;
}

/// A provider speaking the sandbox's HTTP API.
#[derive(Debug, Clone)]
pub struct HttpProvider {
    http: reqwest::Client,
    base: Url,
    policy: Arc<Policy>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
}

impl HttpProvider {
    /// A provider at `base` (e.g. `http://127.0.0.1:9090`).
    pub fn new(http: reqwest::Client, base: Url, policy: Arc<Policy>) -> HttpProvider {
        HttpProvider { http, base, policy }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<T, ProviderError> {
        let url = self.base.join(path).map_err(|e| {
            tracing::error!(error = %e, path, "cannot build the payment provider's URL");
            ProviderError::Unavailable("its URL is misconfigured".to_owned())
        })?;
        let outcome = self
            .policy
            .call(None, true, || {
                let mut request = self.http.request(method.clone(), url.clone());
                if let Some(key) = key {
                    request = request.header("idempotency-key", key);
                }
                if let Some(body) = &body {
                    request = request.json(body);
                }
                attempt(request)
            })
            .await;
        outcome.map_err(|e| match (remote::degradation(&e), e) {
            (Some(degradation), _) => ProviderError::Degraded(degradation),
            (None, PolicyError::Failed(e)) => e,
            (None, _) => {
                ProviderError::Unavailable("the payment provider did not answer in time".into())
            }
        })
    }
}

async fn attempt<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> (Result<T, ProviderError>, Verdict) {
    let failed = |retryable, retry_after| Verdict::Failed {
        retryable,
        retry_after,
    };
    let (request, span) = telemetry::trace::outgoing(request, "payment provider");
    let response = match request.send().instrument(span).await {
        Ok(response) => response,
        Err(e) => {
            // Answers name the provider, never its URL or the error text.
            tracing::warn!(error = %e, "payment provider call failed");
            let error = ProviderError::Unavailable("the call failed".to_owned());
            return (Err(error), failed(e.is_connect() || e.is_timeout(), None));
        }
    };
    let status = response.status();
    let wait = remote::retry_after(response.headers());
    let bytes = match remote::read_capped(response, MAX_ANSWER).await {
        Ok(bytes) => bytes,
        Err(remote::BodyError::TooLarge) => {
            tracing::warn!(
                cap = MAX_ANSWER,
                "payment provider answer too large; not read"
            );
            let error = ProviderError::Unavailable("its answer is too large".to_owned());
            return (Err(error), failed(false, None));
        }
        Err(remote::BodyError::Broke(e)) => {
            tracing::warn!(error = %e, "payment provider answer broke off");
            let error = ProviderError::Unavailable("its answer broke off".to_owned());
            return (Err(error), failed(true, None));
        }
    };
    if status.is_success() {
        return match serde_json::from_slice(&bytes) {
            Ok(answer) => (Ok(answer), Verdict::Healthy),
            Err(e) => {
                tracing::warn!(error = %e, "payment provider answer unreadable");
                (
                    Err(ProviderError::Unavailable(
                        "its answer is unreadable".to_owned(),
                    )),
                    failed(true, None),
                )
            }
        };
    }
    if status.is_server_error() || remote::is_retryable(status) {
        let error = ProviderError::Unavailable(format!("the provider answered {status}"));
        return (Err(error), failed(remote::is_retryable(status), wait));
    }
    // A refusal is one of the API's refusing statuses with the API's error
    // body and a code of its form. Anything else (a redirect, 401/403 from
    // credentials gone stale, a proxy's 404 or 413, 408) is no answer to
    // the request: the outcome is unknown, and a payment must not be
    // recorded declined (nor a hold left behind) for it.
    let code = serde_json::from_slice::<ErrorBody>(&bytes)
        .ok()
        .map(|b| b.error.code)
        .filter(|code| is_code(code));
    let refusing = matches!(status.as_u16(), 400 | 402 | 404 | 409 | 422);
    let Some(code) = code.filter(|_| refusing) else {
        tracing::warn!(
            status = status.as_u16(),
            "payment provider answered outside its API"
        );
        let error = ProviderError::Unavailable(format!("the provider answered {status}"));
        return (
            Err(error),
            failed(status == StatusCode::REQUEST_TIMEOUT, wait),
        );
    };
    if status == StatusCode::CONFLICT && code == "idempotency_key_in_use" {
        // The first request with this key (one that timed out here) is still
        // running there: the outcome is unknown, ask again later.
        let error = ProviderError::Unavailable("the same request is still running".into());
        return (Err(error), failed(true, wait));
    }
    let error = if status == StatusCode::PAYMENT_REQUIRED {
        ProviderError::Declined { code }
    } else {
        ProviderError::Rejected { code }
    };
    // A refusal is an answer: the provider is healthy.
    (Err(error), Verdict::Healthy)
}

/// The largest answer read from the provider: its answers are one
/// authorization or one error, well under a kilobyte.
const MAX_ANSWER: usize = 64 * 1024;

/// Whether `code` has the form of the provider's error codes
/// (`card_declined`): it is stored and shown to the customer.
fn is_code(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether `id` has the form of the provider's ids (`auth_...`, `pm_...`):
/// it is stored, and put in the path of later calls, where `../` or `?`
/// would reach other endpoints.
fn is_id(id: &str) -> bool {
    (1..=255).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `found`, if its id has the provider's form; else the answer is not
/// understood (the outcome is unknown).
fn checked_id<T>(
    found: Result<T, ProviderError>,
    id: impl Fn(&T) -> &str,
) -> Result<T, ProviderError> {
    match found {
        Ok(found) if !is_id(id(&found)) => {
            tracing::warn!("payment provider answered an id outside its form");
            Err(ProviderError::Unavailable(
                "its answer is unreadable".to_owned(),
            ))
        }
        other => other,
    }
}

#[async_trait::async_trait]
impl PaymentProvider for HttpProvider {
    async fn tokenize(&self, card_number: &str) -> Result<ProviderPaymentMethod, ProviderError> {
        // Not idempotent, but harmless to repeat: a second token for the
        // same card is just never used.
        let body = serde_json::json!({ "card_number": card_number });
        let method = self
            .send(Method::POST, "v1/payment_methods", None, Some(body))
            .await;
        checked_id(method, |m: &ProviderPaymentMethod| &m.id)
    }

    async fn authorize(
        &self,
        key: &str,
        amount: Money,
        payment_method: &str,
    ) -> Result<ProviderAuthorization, ProviderError> {
        let body = serde_json::json!({
            "amount_minor": amount.amount_minor(),
            "currency": amount.currency().as_str(),
            "payment_method": payment_method,
        });
        let authorization = self
            .send(Method::POST, "v1/authorizations", Some(key), Some(body))
            .await;
        checked_id(authorization, |a: &ProviderAuthorization| &a.id)
    }

    async fn capture(&self, id: &str) -> Result<ProviderAuthorization, ProviderError> {
        self.send(
            Method::POST,
            &format!("v1/authorizations/{id}/capture"),
            None,
            None,
        )
        .await
    }

    async fn void(&self, id: &str) -> Result<ProviderAuthorization, ProviderError> {
        self.send(
            Method::POST,
            &format!("v1/authorizations/{id}/void"),
            None,
            None,
        )
        .await
    }

    async fn refund(&self, id: &str) -> Result<ProviderAuthorization, ProviderError> {
        self.send(
            Method::POST,
            &format!("v1/authorizations/{id}/refund"),
            None,
            None,
        )
        .await
    }

    async fn authorization(&self, id: &str) -> Result<ProviderAuthorization, ProviderError> {
        self.send(Method::GET, &format!("v1/authorizations/{id}"), None, None)
            .await
    }
}
