//! Tests of the sandbox's HTTP API: the test cards, idempotency keys and
//! the authorization state machine.

use std::time::Duration;

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
    let app =
        test::init_service(App::new().configure(|c| configure(c, Arc::new(Sandbox::default()))))
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
    let app =
        test::init_service(App::new().configure(|c| configure(c, Arc::new(Sandbox::default()))))
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
    let app =
        test::init_service(App::new().configure(|c| configure(c, Arc::new(Sandbox::default()))))
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
    let app =
        test::init_service(App::new().configure(|c| configure(c, Arc::new(Sandbox::default()))))
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

/// The sandbox keeps the last few of each, not every one it ever made: the
/// oldest authorization and its key go, the newer ones stay usable.
#[actix_web::test]
async fn only_the_newest_authorizations_and_keys_are_kept() {
    let app =
        test::init_service(App::new().configure(|c| configure(c, Arc::new(Sandbox::retaining(2)))))
            .await;
    let mut ids = Vec::new();
    for key in ["k1", "k2", "k3"] {
        let (status, body) = call!(&app, authorize(Some(key), cards::SUCCEEDS, 100));
        assert_eq!(status, 201);
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let (_, all) = call!(&app, test::TestRequest::get().uri("/v1/authorizations"));
    let kept: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(kept.len(), 2, "{all}");
    assert!(!kept.contains(&ids[0].as_str()), "{all}");
    let gone = format!("/v1/authorizations/{}/capture", ids[0]);
    let (status, _) = call!(&app, test::TestRequest::post().uri(&gone));
    assert_eq!(status, 404);
    let newest = format!("/v1/authorizations/{}/capture", ids[2]);
    let (status, body) = call!(&app, test::TestRequest::post().uri(&newest));
    assert_eq!((status, body["status"].as_str()), (200, Some("captured")));
    // The newest key still replays its answer; the oldest was forgotten.
    let (_, again) = call!(&app, authorize(Some("k3"), cards::SUCCEEDS, 100));
    assert_eq!(again["id"], ids[2].as_str());
    let (status, fresh) = call!(&app, authorize(Some("k1"), cards::SUCCEEDS, 100));
    assert_eq!(status, 201);
    assert_ne!(fresh["id"], ids[0].as_str());
}

/// A request dropped while it decides (its client gave up on the card that
/// never answers) frees its key: the next request with the key is decided
/// afresh, not answered "still running" for good.
#[actix_web::test]
async fn a_request_dropped_before_it_answers_frees_its_key() {
    let app =
        test::init_service(App::new().configure(|c| configure(c, Arc::new(Sandbox::default()))))
            .await;
    let first = test::call_service(
        &app,
        authorize(Some("gone"), cards::TIMES_OUT, 100).to_request(),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), first)
            .await
            .is_err(),
        "the card never answers in time"
    );
    let again = test::call_service(
        &app,
        authorize(Some("gone"), cards::TIMES_OUT, 100).to_request(),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), again)
            .await
            .is_err(),
        "decided afresh (it waits), not refused at once as still running"
    );
}
