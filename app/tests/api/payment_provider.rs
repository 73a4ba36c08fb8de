//! The payment module's HTTP provider adapter against the sandbox provider
//! on a real socket. (Here rather than in the payment crate: a module may
//! not depend on another module's crate, not even for its tests.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use kernel::{Currency, Money};
use payment::provider::{HttpProvider, PaymentProvider, ProviderError};
use payment_sandbox::cards;
use resilience::{BreakerSettings, Policy, PolicySettings};

fn policy(attempt_timeout_ms: u64) -> Arc<Policy> {
    Arc::new(Policy::new(
        "payment",
        PolicySettings {
            attempt_timeout_ms,
            deadline_ms: 5000,
            max_retries: 1,
            retry_base_ms: 10,
            retry_max_ms: 50,
            retry_budget_percent: 20.0,
            retry_budget_min_per_sec: 5.0,
            max_concurrent: 8,
            breaker: BreakerSettings {
                window_size: 20,
                minimum_calls: 10,
                failure_rate_threshold: 50.0,
                slow_call_rate_threshold: 100.0,
                slow_call_ms: 5000,
                wait_open_ms: 10_000,
                half_open_calls: 1,
            },
        },
    ))
}

/// A sandbox provider on a free loopback port, and an adapter to it.
async fn provider(attempt_timeout_ms: u64) -> (HttpProvider, actix_web::dev::ServerHandle) {
    let (handle, base) = crate::saga_crash::sandbox();
    let adapter = HttpProvider::new(
        crate::helpers::http(),
        base.parse().unwrap(),
        policy(attempt_timeout_ms),
    );
    (adapter, handle)
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

async fn token(provider: &HttpProvider, card: &str) -> String {
    let method = provider.tokenize(card).await.unwrap();
    assert_eq!(method.card_last4, card[card.len() - 4..]);
    assert!(method.id.starts_with("pm_") && !method.id.contains(card));
    method.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_capture_refund_each_once_whatever_the_repeats() {
    let (provider, _server) = provider(2000).await;
    let card = token(&provider, cards::SUCCEEDS).await;
    let first = provider
        .authorize("order-1/authorize", eur(1299), &card)
        .await
        .unwrap();
    assert_eq!(
        (first.status.as_str(), first.card_last4.as_str()),
        ("authorized", "4242")
    );
    let again = provider
        .authorize("order-1/authorize", eur(1299), &card)
        .await
        .unwrap();
    assert_eq!(again.id, first.id, "the same key: the same authorization");
    for _ in 0..2 {
        assert_eq!(
            provider.capture(&first.id).await.unwrap().status,
            "captured"
        );
    }
    assert_eq!(
        provider.void(&first.id).await.unwrap_err(),
        ProviderError::Rejected {
            code: "invalid_state".into()
        },
        "captured money is refunded, not voided"
    );
    assert_eq!(provider.refund(&first.id).await.unwrap().status, "refunded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_are_answers_and_provider_failures_are_unavailability() {
    let (provider, _server) = provider(300).await;
    for (card, code) in [
        (cards::DECLINED, "card_declined"),
        (cards::INSUFFICIENT_FUNDS, "insufficient_funds"),
    ] {
        let method = token(&provider, card).await;
        assert_eq!(
            provider
                .authorize(card, eur(500), &method)
                .await
                .unwrap_err(),
            ProviderError::Declined { code: code.into() }
        );
    }
    assert_eq!(
        provider
            .authorize("unknown", eur(500), "pm_unknown")
            .await
            .unwrap_err(),
        ProviderError::Rejected {
            code: "invalid_payment_method".into()
        }
    );
    let failing = token(&provider, cards::SERVER_ERROR).await;
    assert!(matches!(
        provider
            .authorize("boom", eur(500), &failing)
            .await
            .unwrap_err(),
        ProviderError::Unavailable(_)
    ));
    let slow_card = token(&provider, cards::TIMES_OUT).await;
    let started = Instant::now();
    let slow = provider
        .authorize("slow", eur(500), &slow_card)
        .await
        .unwrap_err();
    assert!(matches!(slow, ProviderError::Unavailable(_)), "{slow:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the attempt timeout, not the provider's 30 s"
    );
}

/// A provider answering outside its API (a redirect, credentials refused,
/// a proxy's page, a timeout, an id that is no id of its own, an answer
/// larger than any of its own) is not
/// refusing the card: each is unavailability, the outcome unknown, never a
/// decline or a refusal the payment would be recorded with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_outside_the_provider_s_api_are_unavailability_not_refusals() {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web as aweb};
    let server = HttpServer::new(|| {
        App::new().default_service(aweb::to(|req: HttpRequest| async move {
            let key = req
                .headers()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let error = |status: u16, code: &str| {
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                    .json(serde_json::json!({"error": {"code": code}}))
            };
            match key.as_str() {
                "moved" => HttpResponse::MovedPermanently()
                    .insert_header(("location", "http://127.0.0.1:9/"))
                    .finish(),
                "stale-key" => error(401, "invalid_api_key"),
                "forbidden" => error(403, "forbidden"),
                "proxy-404" => HttpResponse::NotFound().body("<html>Not Found</html>"),
                "too-large" => HttpResponse::PayloadTooLarge().finish(),
                "slow" => HttpResponse::RequestTimeout().finish(),
                "odd-code" => error(402, "Your card was declined! <b>call us</b>"),
                // Read up to 64 KiB, no more.
                "huge" => HttpResponse::Created()
                    .content_type("application/json")
                    .body(format!("{{\"id\": \"{}\"}}", "a".repeat(100_000))),
                "odd-id" => HttpResponse::Created().json(serde_json::json!({
                    "id": "../../admin?x=1", "status": "authorized", "amount_minor": 500,
                    "currency": "EUR", "card_last4": "4242"
                })),
                // Still a refusal: the API's status, body and code.
                _ => error(402, "card_declined"),
            }
        }))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    let server = server.run();
    let _handle = server.handle();
    tokio::spawn(server);
    // A policy each, so that no breaker opened by the others answers.
    let provider = || {
        HttpProvider::new(
            crate::helpers::http(),
            format!("http://127.0.0.1:{port}/").parse().unwrap(),
            policy(1000),
        )
    };
    for key in [
        "moved",
        "stale-key",
        "forbidden",
        "proxy-404",
        "too-large",
        "slow",
        "odd-code",
        "odd-id",
        "huge",
    ] {
        let answer = provider().authorize(key, eur(500), "pm_1").await;
        assert!(
            matches!(answer, Err(ProviderError::Unavailable(_))),
            "{key}: {answer:?}"
        );
    }
    assert_eq!(
        provider().authorize("declined", eur(500), "pm_1").await,
        Err(ProviderError::Declined {
            code: "card_declined".into()
        })
    );
}
