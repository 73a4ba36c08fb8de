//! Accounts over HTTP: registration rules, own profile and password, hygiene (headers, logs).
//! Admin routes: `users_admin`; rate limits: `rate_limits`.

use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, Shop, access, assert_problem, send, send_json, spawn_app, spawn_app_with,
    test_database,
};

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
    // The same preferences again (a settings form sends them all): no
    // event tells the other modules and webhooks of a change.
    let again = json!({"display_name": "Ada Lovelace", "notification_preferences": {"order_updates": false, "product_news": true, "marketing": false}});
    let changed = send(
        &app,
        reqwest::Method::PATCH,
        "/api/v1/users/me",
        Some(token),
        Some(again),
    )
    .await;
    assert_eq!(changed.status(), 200);
    {
        use diesel_async::RunQueryDsl as _;
        #[derive(diesel::QueryableByName)]
        struct Type {
            #[diesel(sql_type = diesel::sql_types::Text)]
            event_type: String,
        }
        let written: Vec<Type> = diesel::sql_query(
            "SELECT event_type FROM users.outbox WHERE event_type LIKE 'user.%changed%' ORDER BY seq",
        )
        .load(&mut app.db().await)
        .await
        .unwrap();
        let written: Vec<&str> = written.iter().map(|t| t.event_type.as_str()).collect();
        assert_eq!(
            written,
            [
                "user.display_name_changed.v1",
                "user.preferences_changed.v1",
                "user.display_name_changed.v1"
            ]
        );
    }

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

/// A sign-in whose password was checked while a password change was being
/// committed: the change revokes every token, and the sign-in's token
/// must not slip past it (stored after the revocation, it would survive
/// the change). The change is played here by a transaction of the test
/// that changes the hash and revokes the tokens, as the module's does,
/// and commits while the sign-in is under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_racing_a_password_change_gets_no_token_that_survives_it() {
    use diesel_async::SimpleAsyncConnection as _;
    let app = spawn_app().await;
    app.customer("ada@example.com").await;
    let mut change = app.db().await;
    change
        .batch_execute(
            "BEGIN; \
             UPDATE users.users SET password_hash = password_hash || 'changed' \
             WHERE email = 'ada@example.com'; \
             UPDATE users.refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL",
        )
        .await
        .unwrap();
    let signing_in = {
        let request = app
            .client
            .post(app.url("/api/v1/auth/token"))
            .json(&json!({"email": "ada@example.com", "password": PASSWORD}));
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    change.batch_execute("COMMIT").await.unwrap();
    let signed_in = signing_in.await.unwrap();
    assert_problem(signed_in, 401, "invalid_credentials").await;
}

/// Two changes confirmed by the same current password (the owner's, and
/// a thief's who knew it), the other one committing while this one checks
/// the password: this one is refused (401), not written over the other.
/// The other change is played by a transaction of the test that sets the
/// account's hash, holding the row until this change waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_checked_against_a_password_changed_meanwhile_is_refused() {
    use diesel::QueryableByName;
    use diesel_async::{RunQueryDsl as _, SimpleAsyncConnection as _};
    #[derive(QueryableByName)]
    struct Hash {
        #[diesel(sql_type = diesel::sql_types::Text)]
        hash: String,
    }
    #[derive(QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let app = spawn_app().await;
    let ada = app.customer("ada@example.com").await;
    let token = access(&ada).to_owned();
    let other = "another long passphrase";
    assert_eq!(app.register("bob@example.com", other).await.status(), 201);
    let mut db = app.db().await;
    let hash_of = |email: &'static str| {
        diesel::sql_query("SELECT password_hash AS hash FROM users.users WHERE email = $1")
            .bind::<diesel::sql_types::Text, _>(email)
    };
    let ada_hash = hash_of("ada@example.com")
        .get_result::<Hash>(&mut db)
        .await
        .unwrap()
        .hash;
    let bob_hash = hash_of("bob@example.com")
        .get_result::<Hash>(&mut db)
        .await
        .unwrap()
        .hash;
    let Pid { pid } = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result(&mut db)
        .await
        .unwrap();
    let blocked = format!(
        "SELECT pid FROM pg_stat_activity WHERE {pid} = ANY(pg_blocking_pids(pid)) LIMIT 1"
    );

    // Each leg: the test's change holds the row; the request checks the
    // current password against the hash committed before, then waits for
    // the row; the test's change commits; the request must see it.
    for (path, method, body, now_hash, now_password) in [
        (
            "/api/v1/users/me/password",
            reqwest::Method::POST,
            json!({"current_password": PASSWORD, "new_password": "the thief's passphrase"}),
            bob_hash.clone(),
            other,
        ),
        (
            "/api/v1/users/me",
            reqwest::Method::PATCH,
            json!({"email": "thief@example.com", "current_password": other}),
            ada_hash.clone(),
            PASSWORD,
        ),
    ] {
        db.batch_execute(&format!(
            "BEGIN; UPDATE users.users SET password_hash = '{now_hash}' \
             WHERE email = 'ada@example.com'"
        ))
        .await
        .unwrap();
        let request = app
            .client
            .request(method, app.url(path))
            .bearer_auth(&token)
            .json(&body);
        let change = tokio::spawn(async move { request.send().await.unwrap() });
        crate::helpers::eventually("the change waiting for the account's row", || {
            let probe = app.db();
            let blocked = blocked.clone();
            async move {
                diesel::sql_query(blocked)
                    .get_result::<Pid>(&mut probe.await)
                    .await
                    .ok()
            }
        })
        .await;
        db.batch_execute("COMMIT").await.unwrap();
        assert_problem(change.await.unwrap(), 401, "invalid_credentials").await;
        assert_eq!(
            app.login("ada@example.com", now_password).await.status(),
            200,
            "{path}: the change made meanwhile stands"
        );
    }
    assert_eq!(
        app.login("ada@example.com", "the thief's passphrase")
            .await
            .status(),
        401
    );
    assert_eq!(app.login("thief@example.com", PASSWORD).await.status(), 401);
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
    // The ETag a script reads, for the If-Match it sends back (a cart or
    // a product edited in another tab).
    let exposed = allowed.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.split(", ").any(|h| h == "etag"), "{exposed}");
    let preflight = open
        .client
        .request(reqwest::Method::OPTIONS, open.url("/api/v1/cart"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization, content-type, if-match",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    let allowed_headers = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed_headers.contains("if-match"), "{allowed_headers}");
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
    let account: Value = register.json().await.unwrap();
    let tokens: Value = send_json(
        http.post(shop.url("/api/v1/auth/token"))
            .json(&json!({"email": "log@example.com", "password": secret})),
    )
    .await;
    let refreshed: Value = send_json(
        http.post(shop.url("/api/v1/auth/refresh"))
            .json(&json!({"refresh_token": tokens["refresh_token"]})),
    )
    .await;
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
    // Who asked is on every line of the request (its root span), by id:
    // its access-log line too.
    let by_id = format!("\"user.id\":\"{}\"", account["id"].as_str().unwrap());
    assert!(
        logs.lines().any(|line| line.contains("request finished")
            && line.contains("/api/v1/users/me")
            && line.contains(&by_id)),
        "the access-log line of GET /users/me does not name its caller:\n{logs}"
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

/// A password hashed before the hashing parameters changed (an operator
/// raised `memory_kib`) is hashed again at its next sign-in: until then a
/// wrong password for that account cost another amount of work than one
/// for an unknown email, which told accounts apart by time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_hashes_a_password_of_older_parameters_again() {
    use diesel_async::{AsyncConnection as _, RunQueryDsl as _};
    #[derive(diesel::QueryableByName)]
    struct Hash {
        #[diesel(sql_type = diesel::sql_types::Text)]
        hash: String,
    }
    let db = test_database().await;
    let key = crate::helpers::fresh_key_path();
    let before = Shop::start(&[
        ("DATABASE_URL", db.url()),
        ("APP__AUTH__SIGNING_KEY_FILE", key.as_str()),
        ("APP__USER__PASSWORD_HASHING__MEMORY_KIB", "8192"),
    ]);
    before.wait_live().await;
    let http = crate::helpers::http();
    let register = http
        .post(before.url("/api/v1/users"))
        .json(&json!({"email": "old@example.com", "password": PASSWORD, "display_name": "O"}))
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 201);
    let mut conn = diesel_async::AsyncPgConnection::establish(db.url())
        .await
        .unwrap();
    let stored = || {
        diesel::sql_query(
            "SELECT password_hash AS hash FROM users.users WHERE email = 'old@example.com'",
        )
    };
    let old: Hash = stored().get_result(&mut conn).await.unwrap();
    assert!(old.hash.contains("m=8192,"), "{}", old.hash);

    // The same database, the parameters raised to the defaults.
    let after = Shop::start(&[
        ("DATABASE_URL", db.url()),
        ("APP__AUTH__SIGNING_KEY_FILE", key.as_str()),
    ]);
    after.wait_live().await;
    let wrong = http
        .post(after.url("/api/v1/auth/token"))
        .json(&json!({"email": "old@example.com", "password": "not the password at all"}))
        .send()
        .await
        .unwrap();
    assert_problem(wrong, 401, "invalid_credentials").await;
    let unchanged: Hash = stored().get_result(&mut conn).await.unwrap();
    assert_eq!(unchanged.hash, old.hash, "a wrong password changes nothing");
    let signed_in = http
        .post(after.url("/api/v1/auth/token"))
        .json(&json!({"email": "old@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    // Hashed again after the answer, off its path.
    let new = crate::helpers::eventually("the password hashed again", || async {
        let now: Hash = diesel::sql_query(
            "SELECT password_hash AS hash FROM users.users WHERE email = 'old@example.com'",
        )
        .get_result(
            &mut diesel_async::AsyncPgConnection::establish(db.url())
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        now.hash.contains("m=19456,").then_some(now.hash)
    })
    .await;
    let again = http
        .post(after.url("/api/v1/auth/token"))
        .json(&json!({"email": "old@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "the new hash checks the same password");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let kept: Hash = stored().get_result(&mut conn).await.unwrap();
    assert_eq!(kept.hash, new, "a current hash is not hashed again");
}

/// A valid token whose subject holds no account (the shop's own service
/// token, or an account's id from elsewhere) gets the documented 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_no_account_gets_404_on_the_account_routes() {
    let app = crate::helpers::spawn_app().await;
    let token = app.token(&[kernel::Role::Customer]);
    let me = app
        .client
        .get(app.url("/api/v1/users/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    crate::helpers::assert_problem(me, 404, "user_not_found").await;
    let changed = app
        .client
        .patch(app.url("/api/v1/users/me"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"display_name": "Nobody"}))
        .send()
        .await
        .unwrap();
    crate::helpers::assert_problem(changed, 404, "user_not_found").await;
}
