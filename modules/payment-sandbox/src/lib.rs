//! A **sandbox** card payment provider: a real HTTP server that behaves like
//! a card network's API and moves no money. It stands in for the one part
//! of the world the shop cannot reach here; the payment module talks to it
//! over HTTP through its provider adapter, so a real provider plugs in at
//! the same seam.
//!
//! The API, modelled on Stripe's (amounts in minor units):
//!
//! - `POST /v1/payment_methods` with `{"card_number"}`: keeps the card and
//!   answers `{"id": "pm_...", "card_last4"}`, a token the shop stores in
//!   place of the number (so a resumed checkout can still authorize).
//! - `POST /v1/authorizations` with an `Idempotency-Key` header (required)
//!   and `{"amount_minor", "currency"}` plus `"payment_method"` (a token)
//!   or `"card_number"`: holds the amount.
//!   201 with the authorization, or 402 with `{"error": {"code"}}`.
//! - `POST /v1/authorizations/{id}/capture`, `/void`, `/refund`: move it
//!   through `authorized → captured → refunded` or `authorized → voided`.
//!   Repeating the step just done answers the same (idempotent); any other
//!   move is 409 `invalid_state`.
//! - `GET /v1/authorizations/{id}`: the authorization and every step applied
//!   to it; `GET /v1/authorizations`: all of them (tests count captures here).
//!
//! Idempotency keys behave as Stripe's: the first answer is stored and
//! replayed for the same key and body; the same key with another body is
//! 422 `idempotency_key_reused`; the same key while the first request is
//! still running is 409 `idempotency_key_in_use`.
//!
//! Test cards ([`cards`]): one succeeds, one is declined, one lacks funds,
//! one never answers in time, one fails with 500s. Any other number is 402
//! `incorrect_number`. State lives in memory: the sandbox is a test double
//! of a network, not a store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The test card numbers.
pub mod cards {
    /// Authorizes (as at Stripe).
    pub const SUCCEEDS: &str = "4242424242424242";
    /// Declined: `card_declined` (as at Stripe).
    pub const DECLINED: &str = "4000000000000002";
    /// Declined: `insufficient_funds` (as at Stripe).
    pub const INSUFFICIENT_FUNDS: &str = "4000000000009995";
    /// The provider holds the request for [`super::SLOW_ANSWER`] before
    /// answering: callers time out.
    pub const TIMES_OUT: &str = "4000000000000259";
    /// The provider answers 500 every time.
    pub const SERVER_ERROR: &str = "4000000000000119";
}

/// How long the [`cards::TIMES_OUT`] card keeps a request waiting.
pub const SLOW_ANSWER: Duration = Duration::from_secs(30);

/// An authorization's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Amount held on the card.
    Authorized,
    /// Amount taken.
    Captured,
    /// Hold released without taking anything.
    Voided,
    /// Amount given back after capture.
    Refunded,
}

/// One authorization and its history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authorization {
    /// `auth_<uuid>`.
    pub id: String,
    /// Current state.
    pub status: Status,
    /// Amount held, minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The card's last four digits (the full number is never kept).
    pub card_last4: String,
    /// Every state this authorization has been in, in order.
    pub history: Vec<Status>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeRequest {
    amount_minor: i64,
    currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    card_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payment_method: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentMethodRequest {
    card_number: String,
}

/// A stored answer for an idempotency key: the request it answered, and the
/// answer once there is one.
#[derive(Debug, Clone)]
struct Remembered {
    request: AuthorizeRequest,
    answer: Option<(StatusCode, Value)>,
}

/// The sandbox's state, shared by its workers.
#[derive(Debug, Default)]
pub struct Sandbox {
    /// Card numbers by payment method token.
    payment_methods: Mutex<HashMap<String, String>>,
    authorizations: Mutex<HashMap<String, Authorization>>,
    keys: Mutex<HashMap<String, Remembered>>,
}

fn error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value) {
    (status, json!({"error": {"code": code, "message": message}}))
}

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
                    },
                );
            }
        }
    }
    let answer = decide(&sandbox, &request).await;
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

fn last4(card_number: &str) -> String {
    card_number
        .get(card_number.len().saturating_sub(4)..)
        .unwrap_or_default()
        .to_owned()
}

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
    let card_last4 = last4(&card);
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
    match card_number.as_str() {
        cards::SUCCEEDS => {}
        cards::DECLINED => {
            return error(
                StatusCode::PAYMENT_REQUIRED,
                "card_declined",
                "the card was declined",
            );
        }
        cards::INSUFFICIENT_FUNDS => {
            return error(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_funds",
                "the card has insufficient funds",
            );
        }
        cards::TIMES_OUT => {
            tokio::time::sleep(SLOW_ANSWER).await;
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                "network_timeout",
                "the network did not answer",
            );
        }
        cards::SERVER_ERROR => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "processing_error",
                "the sandbox failed, as configured for this card",
            );
        }
        _ => {
            return error(
                StatusCode::PAYMENT_REQUIRED,
                "incorrect_number",
                "not a sandbox test card",
            );
        }
    }
    let card_last4 = last4(&card_number);
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
mod tests {
    use actix_web::{App, test};

    use super::*;

    /// Calls the service; (status, JSON body).
    macro_rules! call {
        ($app:expr, $req:expr $(,)?) => {{
            let response = test::call_service($app, $req.to_request()).await;
            let status = response.status().as_u16();
            let body: Value = test::read_body_json(response).await;
            (status, body)
        }};
    }

    fn authorize(key: Option<&str>, card: &str, amount: i64) -> test::TestRequest {
        let mut req = test::TestRequest::post()
            .uri("/v1/authorizations")
            .set_json(json!({"amount_minor": amount, "currency": "EUR", "card_number": card}));
        if let Some(key) = key {
            req = req.insert_header(("idempotency-key", key));
        }
        req
    }

    #[actix_web::test]
    async fn test_cards_answer_as_documented() {
        let app = test::init_service(
            App::new().configure(|c| configure(c, Arc::new(Sandbox::default()))),
        )
        .await;
        let (status, ok) = call!(&app, authorize(Some("k1"), cards::SUCCEEDS, 1299));
        assert_eq!(status, 201);
        assert_eq!(ok["status"], "authorized");
        assert_eq!(ok["card_last4"], "4242");
        assert!(!ok.to_string().contains(cards::SUCCEEDS), "no full number");
        for (key, card, code) in [
            ("k2", cards::DECLINED, "card_declined"),
            ("k3", cards::INSUFFICIENT_FUNDS, "insufficient_funds"),
            ("k4", "4111111111111111", "incorrect_number"),
        ] {
            let (status, body) = call!(&app, authorize(Some(key), card, 100));
            assert_eq!((status, body["error"]["code"].as_str()), (402, Some(code)));
        }
        let (status, body) = call!(&app, authorize(Some("k5"), cards::SERVER_ERROR, 100));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (500, Some("processing_error"))
        );
        let (status, _) = call!(&app, authorize(None, cards::SUCCEEDS, 100));
        assert_eq!(status, 400, "a key is required");
        let (status, body) = call!(&app, authorize(Some("k6"), cards::SUCCEEDS, 0));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_amount"))
        );
    }

    #[actix_web::test]
    async fn a_key_replays_its_answer_and_refuses_another_body() {
        let app = test::init_service(
            App::new().configure(|c| configure(c, Arc::new(Sandbox::default()))),
        )
        .await;
        let (_, first) = call!(&app, authorize(Some("same"), cards::SUCCEEDS, 500));
        let (status, again) = call!(&app, authorize(Some("same"), cards::SUCCEEDS, 500));
        assert_eq!(status, 201);
        assert_eq!(again["id"], first["id"], "one authorization, replayed");
        let (status, body) = call!(&app, authorize(Some("same"), cards::SUCCEEDS, 501));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("idempotency_key_reused"))
        );
    }

    #[actix_web::test]
    async fn a_key_is_refused_while_its_first_request_runs() {
        let app = test::init_service(
            App::new().configure(|c| configure(c, Arc::new(Sandbox::default()))),
        )
        .await;
        let slow = test::call_service(
            &app,
            authorize(Some("slow"), cards::TIMES_OUT, 100).to_request(),
        );
        let second = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            call!(&app, authorize(Some("slow"), cards::TIMES_OUT, 100))
        };
        tokio::select! {
            _ = slow => panic!("the slow card answered before its time"),
            (status, body) = second => {
                assert_eq!((status, body["error"]["code"].as_str()), (409, Some("idempotency_key_in_use")));
            }
        }
    }

    #[actix_web::test]
    async fn steps_move_once_and_only_along_the_state_machine() {
        let app = test::init_service(
            App::new().configure(|c| configure(c, Arc::new(Sandbox::default()))),
        )
        .await;
        let (_, auth) = call!(&app, authorize(Some("s"), cards::SUCCEEDS, 700));
        let id = auth["id"].as_str().unwrap().to_owned();
        let post =
            |step: &str| test::TestRequest::post().uri(&format!("/v1/authorizations/{id}/{step}"));
        for _ in 0..3 {
            let (status, body) = call!(&app, post("capture"));
            assert_eq!((status, body["status"].as_str()), (200, Some("captured")));
        }
        let (status, body) = call!(&app, post("void"));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("invalid_state"))
        );
        let (status, body) = call!(&app, post("refund"));
        assert_eq!((status, body["status"].as_str()), (200, Some("refunded")));
        let (_, shown) = call!(
            &app,
            test::TestRequest::get().uri(&format!("/v1/authorizations/{id}")),
        );
        assert_eq!(
            shown["history"],
            json!(["authorized", "captured", "refunded"]),
            "one capture"
        );
    }
}
