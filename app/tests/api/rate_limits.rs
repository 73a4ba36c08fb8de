//! Rate limits and bounded work: sign-ins, registrations, the API per client, password checks.

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, access, assert_problem, send, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_registration_are_rate_limited() {
    let app = spawn_app_with(&[
        ("APP__RATE_LIMIT__LOGIN_PER_MINUTE_PER_IP", "4"),
        ("APP__RATE_LIMIT__LOGIN_PER_MINUTE_PER_ACCOUNT", "2"),
        ("APP__RATE_LIMIT__REGISTRATIONS_PER_MINUTE_PER_IP", "1"),
    ])
    .await;
    assert_eq!(
        app.register("ada@example.com", PASSWORD).await.status(),
        201
    );
    let second = app.register("bob@example.com", PASSWORD).await;
    assert!(second.headers().contains_key("retry-after"));
    assert_problem(second, 429, "rate_limited").await;

    // Per account: the third attempt at ada is refused, even with the right password.
    assert_eq!(
        app.login("ada@example.com", "wrong wrong wrong")
            .await
            .status(),
        401
    );
    assert_eq!(
        app.login("ada@example.com", "wrong wrong wrong")
            .await
            .status(),
        401
    );
    assert_problem(
        app.login("ada@example.com", PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    // Per IP: the fourth sign-in from this address is the last allowed.
    assert_eq!(app.login("bob@example.com", PASSWORD).await.status(), 401);
    let limited = app.login("carol@example.com", PASSWORD).await;
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_problem(limited, 429, "rate_limited").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_rate_limited_per_client_but_probes_are_not() {
    let app = spawn_app_with(&[
        ("APP__RATE_LIMIT__PER_SECOND", crate::helpers::SLOW_RATE),
        ("APP__RATE_LIMIT__BURST", "3"),
    ])
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.get("/api/v1/products").await.status().as_u16());
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    let limited = app.get("/api/v1/products").await;
    assert_problem(limited, 429, "rate_limited").await;
    for _ in 0..10 {
        assert_eq!(app.get("/health/live").await.status(), 200);
    }

    let off = spawn_app_with(&[
        ("APP__RATE_LIMIT__ENABLED", "false"),
        ("APP__RATE_LIMIT__PER_SECOND", crate::helpers::SLOW_RATE),
        ("APP__RATE_LIMIT__BURST", "1"),
    ])
    .await;
    for _ in 0..10 {
        assert_eq!(off.get("/api/v1/products").await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_gateway_each_client_has_its_own_budget() {
    let limits = [
        ("APP__RATE_LIMIT__PER_SECOND", crate::helpers::SLOW_RATE),
        ("APP__RATE_LIMIT__BURST", "2"),
    ];
    let get = |app: &TestApp, client: &'static str| {
        let request = app
            .client
            .get(app.url("/api/v1/products"))
            .header("x-forwarded-for", client);
        async move { request.send().await.unwrap().status().as_u16() }
    };

    // The gateway (here: loopback) is trusted: clients are told apart.
    let mut trusted = limits.to_vec();
    trusted.push(("APP__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1"));
    let behind = spawn_app_with(&trusted).await;
    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"] {
        assert_eq!(get(&behind, client).await, 200, "{client}");
        assert_eq!(get(&behind, client).await, 200, "{client}");
    }
    assert_eq!(get(&behind, "203.0.113.1").await, 429);
    // An IPv6 client counts by its /64: another address of it is no
    // new budget; another network is.
    assert_eq!(get(&behind, "2001:db8:0:1::1").await, 200);
    assert_eq!(get(&behind, "2001:db8:0:1::2").await, 200);
    assert_eq!(get(&behind, "2001:db8:0:1:ffff::3").await, 429);
    assert_eq!(get(&behind, "2001:db8:0:2::1").await, 200);

    // Nobody trusted: a client cannot dodge its limit by naming itself.
    let direct = spawn_app_with(&limits).await;
    let statuses = [
        get(&direct, "203.0.113.1").await,
        get(&direct, "203.0.113.2").await,
        get(&direct, "203.0.113.3").await,
    ];
    assert_eq!(statuses, [200, 200, 429]);
}

/// An IPv6 client counts by its /64, and the /64s of one site (a /56, the
/// delegation one subscriber is routed) count together too under the
/// stricter limits, at sixteen clients' worth: one subscriber does not get
/// 256 budgets of registrations or sign-ins. Another /56 of the same /48
/// is another subscriber's. (Registrations refused for a short password,
/// after the limit counted them: no password is hashed, so the sixteen
/// all fall within the refill of one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_networks_of_one_ipv6_site_share_a_budget_of_registrations() {
    let app = spawn_app_with(&[
        ("APP__RATE_LIMIT__REGISTRATIONS_PER_MINUTE_PER_IP", "1"),
        ("APP__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let register = |client: String| {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let request = app
            .client
            .post(app.url("/api/v1/users"))
            .header("x-forwarded-for", client)
            .json(&serde_json::json!({
                "email": email, "password": "short", "display_name": "Site"
            }));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for network in 1..=16 {
        let client = format!("2001:db8:aa:{network:x}::1");
        assert_eq!(register(client).await, 422, "network {network}");
    }
    assert_eq!(
        register("2001:db8:aa:11::1".to_owned()).await,
        429,
        "the site's seventeenth"
    );
    assert_eq!(
        register("2001:db8:aa:100::1".to_owned()).await,
        422,
        "another /56 of the same /48"
    );
    assert_eq!(
        register("203.0.113.9".to_owned()).await,
        422,
        "an IPv4 client"
    );
}

/// `POST /users/me/password` as the bearer of `token`.
async fn change_password(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    send(
        app,
        reqwest::Method::POST,
        "/api/v1/users/me/password",
        Some(token),
        Some(body),
    )
    .await
}

/// A burst of password checks: beyond the hashing queue they are refused
/// at once (503 with `Retry-After`), and the ones waiting hold no database
/// connection, so requests that need one still get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_password_checks_is_bounded_and_starves_nobody() {
    let app = spawn_app_with(&[
        ("APP__RATE_LIMIT__ENABLED", "false"),
        ("APP__USER__PASSWORD_HASHING__MAX_CONCURRENT", "1"),
        ("APP__USER__PASSWORD_HASHING__MAX_QUEUED", "2"),
        ("APP__USER__PASSWORD_HASHING__ITERATIONS", "6"),
        ("APP__USER__DATABASE__MAX_CONNECTIONS", "2"),
    ])
    .await;
    let tokens = app.customer("burst@example.com").await;
    let token = access(&tokens).to_owned();
    let wrong = json!({"current_password": "not the password at all", "new_password": "a brand new passphrase"});

    let changes = (0..16).map(|_| change_password(&app, &token, wrong.clone()));
    let reads = (0..8).map(|_| {
        send(
            &app,
            reqwest::Method::GET,
            "/api/v1/users/me",
            Some(&token),
            None,
        )
    });
    let (changes, reads) = tokio::join!(
        futures_util::future::join_all(changes),
        futures_util::future::join_all(reads)
    );

    let mut busy = 0;
    let mut refused = 0;
    for answer in changes {
        match answer.status().as_u16() {
            401 => refused += 1,
            503 => {
                assert_eq!(answer.headers()["retry-after"], "1");
                assert_problem(answer, 503, "password_hashing_busy").await;
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", answer.text().await.unwrap()),
        }
    }
    assert!(busy > 0, "the queue of 1 + 2 let all 16 in");
    assert!(refused >= 3, "the admitted checks ran: {refused}");
    for read in reads {
        assert_eq!(read.status(), 200, "a read waited behind the hashing queue");
    }
}

/// Current-password checks count against the account, like sign-ins: a
/// stolen session cannot guess the password faster than the sign-in form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_password_checks_are_limited_per_account() {
    let app = spawn_app_with(&[("APP__RATE_LIMIT__LOGIN_PER_MINUTE_PER_ACCOUNT", "3")]).await;
    let guessed = app.customer("guessed@example.com").await;
    let other = app.customer("other@example.com").await;
    let guess = json!({"current_password": "is it this one perhaps", "new_password": "a brand new passphrase"});
    for _ in 0..3 {
        let answer = change_password(&app, access(&guessed), guess.clone()).await;
        assert_problem(answer, 401, "invalid_credentials").await;
    }
    // The fourth check, by password change or by email change, waits.
    let limited = change_password(&app, access(&guessed), guess.clone()).await;
    assert!(limited.headers().contains_key("retry-after"));
    assert_problem(limited, 429, "rate_limited").await;
    let by_email = send(
        &app,
        reqwest::Method::PATCH,
        "/api/v1/users/me",
        Some(access(&guessed)),
        Some(json!({"email": "new@example.com", "current_password": "still guessing here"})),
    )
    .await;
    assert_problem(by_email, 429, "rate_limited").await;
    // Another account is not affected.
    let theirs = change_password(&app, access(&other), json!({"current_password": crate::helpers::PASSWORD, "new_password": "a brand new passphrase"}))
    .await;
    assert_eq!(theirs.status(), 204);
}

/// The shop's own module calls (a verified service token, ADR 0013) are not
/// counted against the per-client limit: in a split deployment every call
/// of the order process to the catalog comes from one address, and
/// counting them so limited all its customers as one client. A customer's
/// token, or a token that claims the role without the service key's
/// signature, is counted by address as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shops_own_module_calls_are_not_counted_against_the_client_limit() {
    let app = spawn_app_with(&[
        ("APP__RATE_LIMIT__PER_SECOND", crate::helpers::SLOW_RATE),
        ("APP__RATE_LIMIT__BURST", "2"),
    ])
    .await;
    let service = app::compose::service_tokens(&app.settings)
        .unwrap()
        .token()
        .unwrap();
    let get = |token: Option<String>| {
        let mut request = app.client.get(app.url("/api/v1/products"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(None).await, 200);
    assert_eq!(get(None).await, 200);
    assert_eq!(get(None).await, 429, "this address's budget is spent");
    for _ in 0..10 {
        assert_eq!(get(Some(service.clone())).await, 200, "the shop's own call");
    }
    let customer = app.token(&[kernel::Role::Customer]);
    assert_eq!(
        get(Some(customer)).await,
        429,
        "a customer counts by address"
    );
    // The role claimed with the users' key, which never signs it.
    let forged = crate::helpers::mint_token(&app.settings, &[kernel::Role::Service]);
    assert_eq!(
        get(Some(forged)).await,
        429,
        "an unverified claim counts by address"
    );
}
