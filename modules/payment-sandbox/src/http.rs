//! The sandbox's HTTP API: its routes and server, each handler checking a
//! request and answering from the in-memory state.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cards;
use crate::state::{Authorization, Remembered, Sandbox, Status};

/// The body of `POST /v1/authorizations`: an amount, and a card number or a
/// payment method token.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthorizeRequest {
    amount_minor: i64,
    currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    card_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payment_method: Option<String>,
}

/// The body of `POST /v1/payment_methods`: the card to keep.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentMethodRequest {
    card_number: String,
}

/// An error answer: `{"error": {"code", "message"}}` with `status`.
fn error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value) {
    (status, json!({"error": {"code": code, "message": message}}))
}

/// The HTTP response of an answer.
fn respond((status, body): (StatusCode, Value)) -> HttpResponse {
    HttpResponse::build(status).json(body)
}

/// Registers the sandbox's routes.
pub fn configure(cfg: &mut web::ServiceConfig, sandbox: Arc<Sandbox>) {
    cfg.app_data(web::Data::from(sandbox))
        .app_data(web::JsonConfig::default().error_handler(|e, _| {
            let (status, body) = error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string());
            actix_web::error::InternalError::from_response(
                e,
                HttpResponse::build(status).json(body),
            )
            .into()
        }))
        .route("/v1/payment_methods", web::post().to(payment_method))
        .route("/v1/authorizations", web::post().to(authorize))
        .route("/v1/authorizations", web::get().to(list))
        .route("/v1/authorizations/{id}", web::get().to(show))
        .route("/v1/authorizations/{id}/{step}", web::post().to(step));
}

/// A sandbox provider server bound to `host:port` (port 0: any free port),
/// not yet running; with the port it got.
///
/// # Errors
/// The address cannot be bound.
pub fn server(
    host: &str,
    port: u16,
    workers: usize,
) -> std::io::Result<(actix_web::dev::Server, u16)> {
    let sandbox = Arc::new(Sandbox::default());
    let server = actix_web::HttpServer::new(move || {
        let sandbox = Arc::clone(&sandbox);
        actix_web::App::new().configure(move |cfg| configure(cfg, sandbox))
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(1)
    .bind((host, port))?;
    let port = server.addrs().first().map_or(port, |a| a.port());
    Ok((server.run(), port))
}

/// `POST /v1/authorizations`: claims the idempotency key, then decides, and
/// remembers the answer unless it is a 500.
async fn authorize(
    sandbox: web::Data<Sandbox>,
    req: HttpRequest,
    body: web::Json<AuthorizeRequest>,
) -> HttpResponse {
    let request = body.into_inner();
    let Some(key) = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(str::to_owned)
    else {
        return respond(error(
            StatusCode::BAD_REQUEST,
            "idempotency_key_required",
            "send an Idempotency-Key header (1 to 255 characters)",
        ));
    };
    // Claim the key, or answer from what it already holds.
    {
        let Ok(mut keys) = sandbox.keys.lock() else {
            return respond(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "poisoned",
            ));
        };
        match keys.get(&key) {
            Some(seen) if seen.request != request => {
                return respond(error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this key was used with another request",
                ));
            }
            Some(Remembered {
                answer: Some(answer),
                ..
            }) => return respond(answer.clone()),
            Some(_) => {
                return respond(error(
                    StatusCode::CONFLICT,
                    "idempotency_key_in_use",
                    "a request with this key is still running",
                ));
            }
            None => {
                keys.insert(
                    key.clone(),
                    Remembered {
                        request: request.clone(),
                        answer: None,
                        claimed: std::time::Instant::now(),
                    },
                );
            }
        }
    }
    // A request dropped before it answers (its client gone: actix drops
    // the handler) frees its key, as a provider's does for a request that
    // never completed; it was held for good, every later request with the
    // key answered "still running".
    let claim = Claim {
        sandbox: &sandbox,
        key: Some(key.clone()),
    };
    let answer = decide(&sandbox, &request).await;
    claim.answered();
    if let Ok(mut keys) = sandbox.keys.lock() {
        match &answer {
            // A 500 is not remembered: the client may retry with the key.
            (status, _) if status.is_server_error() => {
                keys.remove(&key);
            }
            _ => {
                if let Some(seen) = keys.get_mut(&key) {
                    seen.answer = Some(answer.clone());
                }
            }
        }
    }
    respond(answer)
}

/// An idempotency key claimed by a request still deciding; freed if the
/// request is dropped before [`Claim::answered`].
struct Claim<'a> {
    sandbox: &'a Sandbox,
    key: Option<String>,
}

impl Claim<'_> {
    /// The request answered: the key keeps its answer.
    fn answered(mut self) {
        self.key = None;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take()
            && let Ok(mut keys) = self.sandbox.keys.lock()
            && keys.get(&key).is_some_and(|seen| seen.answer.is_none())
        {
            keys.remove(&key);
        }
    }
}

/// `POST /v1/payment_methods`: keeps a card number and answers its token.
async fn payment_method(
    sandbox: web::Data<Sandbox>,
    body: web::Json<PaymentMethodRequest>,
) -> HttpResponse {
    let card = body.into_inner().card_number;
    if !(12..=19).contains(&card.len()) || !card.bytes().all(|b| b.is_ascii_digit()) {
        return respond(error(
            StatusCode::BAD_REQUEST,
            "invalid_number",
            "a card number is 12 to 19 digits",
        ));
    }
    let id = format!("pm_{}", uuid::Uuid::new_v4().simple());
    let card_last4 = cards::last4(&card);
    match sandbox.payment_methods.lock() {
        Ok(mut methods) => {
            methods.insert(id.clone(), card);
            HttpResponse::Created().json(json!({"id": id, "card_last4": card_last4}))
        }
        Err(_) => respond(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "poisoned",
        )),
    }
}

/// The answer to an authorization request: checks it, applies the test
/// card's rule, and keeps the authorization if the card succeeds.
async fn decide(sandbox: &Sandbox, request: &AuthorizeRequest) -> (StatusCode, Value) {
    let card_number = match (&request.card_number, &request.payment_method) {
        (Some(card), None) => card.clone(),
        (None, Some(token)) => {
            let known = sandbox
                .payment_methods
                .lock()
                .ok()
                .and_then(|methods| methods.get(token).cloned());
            match known {
                Some(card) => card,
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_payment_method",
                        "no such payment method",
                    );
                }
            }
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "send either card_number or payment_method",
            );
        }
    };
    if request.amount_minor <= 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            "amount_minor must be positive",
        );
    }
    if request.currency.len() != 3 || !request.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_currency",
            "currency is an ISO 4217 code such as EUR",
        );
    }
    if let Some((status, code, message)) = cards::refusal(&card_number).await {
        return error(status, code, message);
    }
    let card_last4 = cards::last4(&card_number);
    let authorization = Authorization {
        id: format!("auth_{}", uuid::Uuid::new_v4().simple()),
        status: Status::Authorized,
        amount_minor: request.amount_minor,
        currency: request.currency.clone(),
        card_last4,
        history: vec![Status::Authorized],
    };
    let body = json!(authorization);
    match sandbox.authorizations.lock() {
        Ok(mut all) => {
            all.insert(authorization.id.clone(), authorization);
            (StatusCode::CREATED, body)
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "poisoned"),
    }
}

/// Every authorization, ordered by id (tests count captures here).
async fn list(sandbox: web::Data<Sandbox>) -> HttpResponse {
    let mut all: Vec<Authorization> = sandbox
        .authorizations
        .lock()
        .map(|all| all.values().cloned().collect())
        .unwrap_or_default();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    HttpResponse::Ok().json(all)
}

/// `GET /v1/authorizations/{id}`: one authorization and its history.
async fn show(sandbox: web::Data<Sandbox>, id: web::Path<String>) -> HttpResponse {
    let found = sandbox
        .authorizations
        .lock()
        .ok()
        .and_then(|all| all.get(id.as_str()).cloned());
    match found {
        Some(authorization) => HttpResponse::Ok().json(authorization),
        None => respond(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such authorization",
        )),
    }
}

/// `POST /v1/authorizations/{id}/{step}`: capture, void or refund, once.
async fn step(sandbox: web::Data<Sandbox>, path: web::Path<(String, String)>) -> HttpResponse {
    let (id, step) = path.into_inner();
    let (from, to) = match step.as_str() {
        "capture" => (Status::Authorized, Status::Captured),
        "void" => (Status::Authorized, Status::Voided),
        "refund" => (Status::Captured, Status::Refunded),
        _ => return respond(error(StatusCode::NOT_FOUND, "not_found", "no such step")),
    };
    let Ok(mut all) = sandbox.authorizations.lock() else {
        return respond(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "poisoned",
        ));
    };
    let Some(authorization) = all.get_mut(&id) else {
        return respond(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such authorization",
        ));
    };
    if authorization.status == to {
        // Done already: the same answer again, nothing moves twice.
        return HttpResponse::Ok().json(&*authorization);
    }
    if authorization.status != from {
        return respond(error(
            StatusCode::CONFLICT,
            "invalid_state",
            &format!(
                "cannot {step} an authorization that is {:?}",
                authorization.status
            ),
        ));
    }
    authorization.status = to;
    authorization.history.push(to);
    tracing::info!(authorization = %id, step, "sandbox payment step");
    HttpResponse::Ok().json(&*authorization)
}

#[cfg(test)]
mod tests;
