//! Accounts over HTTP: registration rules, own profile, admin routes, rate limits, hygiene.

use kernel::Role;
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, Shop, TestApp, assert_problem, spawn_app, spawn_app_with, test_database,
};

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_makes_a_customer_and_refuses_mass_assignment() {
    let app = spawn_app().await;
    let response = app.register("New@Example.com", PASSWORD).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let user: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/users/{}", user["id"].as_str().unwrap())
    );
    assert_eq!(user["roles"], json!(["customer"]));
    assert!(user.get("password_hash").is_none() && user.get("password").is_none());

    for field in [
        json!({"roles": ["admin"]}),
        json!({"status": "active"}),
        json!({"id": "x"}),
    ] {
        let mut body = json!({"email": "x@example.com", "password": PASSWORD, "display_name": "X"});
        body.as_object_mut()
            .unwrap()
            .extend(field.as_object().unwrap().clone());
        let response = send(
            &app,
            reqwest::Method::POST,
            "/api/v1/users",
            None,
            Some(body),
        )
        .await;
        assert_problem(response, 422, "invalid_body").await;
    }
    assert_problem(
        app.register("new@example.com", PASSWORD).await,
        409,
        "email_taken",
    )
    .await;
    let weak = assert_problem(
        app.register("weak@example.com", "password1234").await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(weak["errors"][0]["field"], "password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_manage_their_own_profile() {
    let app = spawn_app().await;
    let tokens = app.customer("ada@example.com").await;
    let token = access(&tokens);

    let patch = json!({"display_name": "Ada L.", "notification_preferences": {"order_updates": false, "product_news": true, "marketing": false}});
    let me: Value = send(
        &app,
        reqwest::Method::PATCH,
        "/api/v1/users/me",
        Some(token),
        Some(patch),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(me["display_name"], "Ada L.");
    assert_eq!(me["notification_preferences"]["product_news"], true);

    // Roles cannot be granted through the profile.
    let grab = send(
        &app,
        reqwest::Method::PATCH,
        "/api/v1/users/me",
        Some(token),
        Some(json!({"roles": ["admin"]})),
    )
    .await;
    assert_problem(grab, 422, "invalid_body").await;

    // Changing the email needs the current password.
    let no_password = send(
        &app,
        reqwest::Method::PATCH,
        "/api/v1/users/me",
        Some(token),
        Some(json!({"email": "ada2@example.com"})),
    )
    .await;
    assert_problem(no_password, 422, "validation_failed").await;
    let wrong = send(
        &app,
        reqwest::Method::PATCH,
        "/api/v1/users/me",
        Some(token),
        Some(json!({"email": "ada2@example.com", "current_password": "wrong wrong wrong"})),
    )
    .await;
    assert_problem(wrong, 401, "invalid_credentials").await;
    let right = send(
        &app,
        reqwest::Method::PATCH,
        "/api/v1/users/me",
        Some(token),
        Some(json!({"email": "Ada2@example.com", "current_password": PASSWORD})),
    )
    .await;
    assert_eq!(right.status(), 200);
    assert_eq!(app.login("ada2@example.com", PASSWORD).await.status(), 200);
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_signs_out_everywhere() {
    let app = spawn_app().await;
    let tokens = app.customer("ada@example.com").await;
    let token = access(&tokens);
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});

    let wrong = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/users/me/password",
        Some(token),
        Some(change("nope nope nope", "a brand new passphrase")),
    )
    .await;
    assert_problem(wrong, 401, "invalid_credentials").await;
    let weak = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/users/me/password",
        Some(token),
        Some(change(PASSWORD, "short")),
    )
    .await;
    assert_problem(weak, 422, "validation_failed").await;
    let ok = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/users/me/password",
        Some(token),
        Some(change(PASSWORD, "a brand new passphrase")),
    )
    .await;
    assert_eq!(ok.status(), 204);

    let refresh = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": tokens["refresh_token"]})),
    )
    .await;
    assert_problem(refresh, 401, "invalid_refresh_token").await;
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 401);
    assert_eq!(
        app.login("ada@example.com", "a brand new passphrase")
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_see_only_themselves_and_admins_see_all() {
    let app = spawn_app().await;
    let a = app.customer("a@example.com").await;
    app.customer("b@example.com").await;
    let admin = app.admin("root@example.com").await;
    let me_b: Value = {
        let b = app
            .login("b@example.com", PASSWORD)
            .await
            .json::<Value>()
            .await
            .unwrap();
        send(
            &app,
            reqwest::Method::GET,
            "/api/v1/users/me",
            Some(access(&b)),
            None,
        )
        .await
        .json()
        .await
        .unwrap()
    };
    let b_path = format!("/api/v1/users/{}", me_b["id"].as_str().unwrap());

    // A asks for B by id: 404, not 403.
    assert_problem(
        send(&app, reqwest::Method::GET, &b_path, Some(access(&a)), None).await,
        404,
        "user_not_found",
    )
    .await;
    assert_problem(
        send(&app, reqwest::Method::GET, &b_path, None, None).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(
        send(
            &app,
            reqwest::Method::GET,
            &b_path,
            Some(access(&admin)),
            None
        )
        .await
        .status(),
        200
    );

    // The user list is for admins.
    assert_problem(
        send(&app, reqwest::Method::GET, "/api/v1/users", None, None).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_problem(
        send(
            &app,
            reqwest::Method::GET,
            "/api/v1/users",
            Some(access(&a)),
            None,
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    let page: Value = send(
        &app,
        reqwest::Method::GET,
        "/api/v1/users?limit=2",
        Some(access(&admin)),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string());

    // A customer cannot use the admin route on themselves either.
    let me_a: Value = send(
        &app,
        reqwest::Method::GET,
        "/api/v1/users/me",
        Some(access(&a)),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let a_path = format!("/api/v1/users/{}", me_a["id"].as_str().unwrap());
    let promote = send(
        &app,
        reqwest::Method::PATCH,
        &a_path,
        Some(access(&a)),
        Some(json!({"roles": ["admin"]})),
    )
    .await;
    assert_problem(promote, 403, "forbidden").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_change_roles_and_disable_accounts() {
    let app = spawn_app().await;
    let b = app.customer("b@example.com").await;
    let admin = app.admin("root@example.com").await;
    let me_b: Value = send(
        &app,
        reqwest::Method::GET,
        "/api/v1/users/me",
        Some(access(&b)),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let b_path = format!("/api/v1/users/{}", me_b["id"].as_str().unwrap());

    let changed: Value = send(
        &app,
        reqwest::Method::PATCH,
        &b_path,
        Some(access(&admin)),
        Some(json!({"roles": ["customer", "admin"]})),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(changed["roles"], json!(["customer", "admin"]));
    let empty = send(
        &app,
        reqwest::Method::PATCH,
        &b_path,
        Some(access(&admin)),
        Some(json!({"roles": []})),
    )
    .await;
    assert_problem(empty, 422, "validation_failed").await;

    let disabled = send(
        &app,
        reqwest::Method::PATCH,
        &b_path,
        Some(access(&admin)),
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert_eq!(disabled.status(), 200);
    assert_problem(
        app.login("b@example.com", PASSWORD).await,
        403,
        "account_disabled",
    )
    .await;
    let refresh = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": b["refresh_token"]})),
    )
    .await;
    assert_problem(refresh, 401, "invalid_refresh_token").await;

    // An admin cannot lock themselves out.
    let me: Value = send(
        &app,
        reqwest::Method::GET,
        "/api/v1/users/me",
        Some(access(&admin)),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let self_path = format!("/api/v1/users/{}", me["id"].as_str().unwrap());
    let demote = send(
        &app,
        reqwest::Method::PATCH,
        &self_path,
        Some(access(&admin)),
        Some(json!({"roles": ["customer"]})),
    )
    .await;
    assert_problem(demote, 422, "validation_failed").await;
}

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
        ("APP__RATE_LIMIT__PER_SECOND", "1"),
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
        ("APP__RATE_LIMIT__PER_SECOND", "1"),
        ("APP__RATE_LIMIT__BURST", "1"),
    ])
    .await;
    for _ in 0..10 {
        assert_eq!(off.get("/api/v1/products").await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_security_headers_and_cors_is_closed_by_default() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/v1/products"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert!(!headers.contains_key("access-control-allow-origin"));

    let open = spawn_app_with(&[("APP__CORS__ALLOWED_ORIGINS", "https://shop.example")]).await;
    let allowed = open
        .client
        .get(open.url("/api/v1/products"))
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let other = open
        .client
        .get(open.url("/api/v1/products"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let db = test_database().await;
    let key = crate::helpers::fresh_key_path();
    let shop = Shop::start(&[
        ("DATABASE_URL", db.url()),
        ("APP__AUTH__SIGNING_KEY_FILE", key.as_str()),
        ("RUST_LOG", "debug"),
    ]);
    shop.wait_live().await;
    let http = crate::helpers::http();
    let secret = "a very secret passphrase 77";
    let register = http
        .post(shop.url("/api/v1/users"))
        .json(&json!({"email": "log@example.com", "password": secret, "display_name": "L"}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 201);
    let tokens: Value = http
        .post(shop.url("/api/v1/auth/token"))
        .json(&json!({"email": "log@example.com", "password": secret}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refreshed: Value = http
        .post(shop.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": tokens["refresh_token"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    http.get(shop.url("/api/v1/users/me"))
        .bearer_auth(access(&refreshed))
        .send()
        .await
        .unwrap();
    http.post(shop.url("/api/v1/auth/token"))
        .json(&json!({"email": "log@example.com", "password": "wrong but secret 99"}))
        .send()
        .await
        .unwrap();

    let logs = shop.logs();
    assert!(
        logs.contains("signed in"),
        "the flow was logged at all:\n{logs}"
    );
    for leak in [
        secret,
        "wrong but secret 99",
        tokens["access_token"].as_str().unwrap(),
        tokens["refresh_token"].as_str().unwrap(),
        refreshed["access_token"].as_str().unwrap(),
        refreshed["refresh_token"].as_str().unwrap(),
        "$argon2",
    ] {
        assert!(!logs.contains(leak), "the logs contain `{leak}`");
    }
}

#[test]
fn admin_create_command_makes_an_admin_who_can_sign_in() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(test_database());
    let key = crate::helpers::fresh_key_path();
    let service_key = crate::helpers::fresh_key_path();
    let shop = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_shop"));
        command
            .env_remove("APP_ENV")
            .env(
                "APP_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../config"),
            )
            .env("DATABASE_URL", db.url())
            .env("APP__AUTH__SIGNING_KEY_FILE", &key)
            .env("APP__AUTH__SERVICE_KEY_FILE", &service_key)
            .env("APP__LOG__FORMAT", "json");
        command
    };
    let output = shop()
        .args([
            "admin",
            "create",
            "--email",
            "Root@Example.com",
            "--password",
            PASSWORD,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Password from standard input.
    let mut child = shop()
        .args(["admin", "create", "--email", "second@example.com"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{PASSWORD}").unwrap();
    }
    assert!(child.wait().unwrap().success());

    // A weak password is refused with the reason.
    let weak = shop()
        .args([
            "admin",
            "create",
            "--email",
            "third@example.com",
            "--password",
            "short",
        ])
        .output()
        .unwrap();
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("password: must be at least 12"));

    // Both admins sign in and hold the admin role.
    runtime.block_on(async {
        let settings = crate::helpers::test_settings(
            Some(db.url()),
            &[("APP__AUTH__SIGNING_KEY_FILE", key.as_str())],
        );
        let signing = app::compose::signing_key(&settings).unwrap();
        let verifier = auth::Verifier::local(
            app::compose::key_set(&settings, &signing).unwrap(),
            &settings.auth.policy(),
        );
        let app = app::Application::build(settings).await.unwrap();
        let address = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        for email in ["root@example.com", "second@example.com"] {
            let tokens: Value = crate::helpers::http()
                .post(format!("{address}/api/v1/auth/token"))
                .json(&json!({"email": email, "password": PASSWORD}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let caller = verifier
                .verify(tokens["access_token"].as_str().unwrap())
                .await
                .unwrap();
            assert!(caller.has(Role::Admin), "{email}");
        }
        handle.stop();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_gateway_each_client_has_its_own_budget() {
    let limits = [
        ("APP__RATE_LIMIT__PER_SECOND", "1"),
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

    // Nobody trusted: a client cannot dodge its limit by naming itself.
    let direct = spawn_app_with(&limits).await;
    let statuses = [
        get(&direct, "203.0.113.1").await,
        get(&direct, "203.0.113.2").await,
        get(&direct, "203.0.113.3").await,
    ];
    assert_eq!(statuses, [200, 200, 429]);
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
