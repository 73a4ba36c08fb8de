//! Sign-in, refresh rotation, sign-out, token verification and key rotation.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kernel::Role;
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, assert_problem, fresh_key_path, get_json, product_json, spawn_app, spawn_app_with,
    test_settings,
};

async fn refresh(app: &crate::helpers::TestApp, token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": token}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_returns_uncacheable_tokens_that_work() {
    let app = spawn_app().await;
    app.register("ada@example.com", PASSWORD).await;

    let response = app.login("ADA@example.com ", PASSWORD).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().unwrap();

    let me: Value = get_json(&app.client, app.url("/api/v1/users/me"), access).await;
    assert_eq!(me["email"], "ada@example.com");

    // The token's kid is published in the JWKS.
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(access.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    assert!(jwks["keys"][0].get("d").is_none(), "no private part");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_and_wrong_password_get_the_same_answer() {
    let app = spawn_app().await;
    app.register("ada@example.com", PASSWORD).await;

    let wrong_password = app
        .login("ada@example.com", "not the password at all")
        .await;
    let unknown_email = app.login("nobody@example.com", PASSWORD).await;

    assert_eq!(wrong_password.status(), 401);
    assert_eq!(unknown_email.status(), 401);
    let mut a: Value = wrong_password.json().await.unwrap();
    let mut b: Value = unknown_email.json().await.unwrap();
    // Only the request id differs.
    a.as_object_mut().unwrap().remove("request_id");
    b.as_object_mut().unwrap().remove("request_id");
    assert_eq!(a, b);
    assert_eq!(a["code"], "invalid_credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let app = spawn_app().await;
    let first = app.customer("ada@example.com").await;
    let r1 = first["refresh_token"].as_str().unwrap();

    let second: Value = refresh(&app, r1).await.json().await.unwrap();
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2);
    assert!(second["access_token"].is_string());

    // r1 is spent: presenting it again is a replay, and revokes r2 too.
    assert_problem(refresh(&app, r1).await, 401, "invalid_refresh_token").await;
    assert_problem(refresh(&app, r2).await, 401, "invalid_refresh_token").await;

    // Another sign-in is a new family, unaffected.
    let other = app
        .login("ada@example.com", PASSWORD)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        refresh(&app, other["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

/// A spent refresh token presented long after its own expiry, while its
/// session lives on (a thief kept rotating it), still revokes the session:
/// a session keeps its spent tokens for its whole life, not only until each
/// expires. And a session ends `session_max_days` after its sign-in,
/// however often it is refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_replay_revokes_a_live_session_and_a_session_ends_at_its_maximum() {
    use diesel_async::RunQueryDsl as _;
    let app = spawn_app_with(&[("APP__USER__PRUNE_INTERVAL_SECS", "1")]).await;
    let first = app.customer("ada@example.com").await;
    let r1 = first["refresh_token"].as_str().unwrap();
    let second: Value = refresh(&app, r1).await.json().await.unwrap();
    let r2 = second["refresh_token"].as_str().unwrap();
    // r1 as if issued sixteen days ago, expired for two; its successor
    // (the thief's) lives on. Beside it, a session of another customer
    // whose every token expired two days ago: the pruning job (every
    // second) deletes that one, and has run once it is gone.
    let witness = app.customer("witness@example.com").await;
    let witness = witness["refresh_token"].as_str().unwrap();
    diesel::sql_query(
        "UPDATE users.refresh_tokens SET issued_at = now() - interval '16 days', \
         expires_at = now() - interval '2 days' \
         WHERE spent_at IS NOT NULL OR user_id = \
               (SELECT id FROM users.users WHERE email = 'witness@example.com')",
    )
    .execute(&mut app.db().await)
    .await
    .unwrap();
    crate::helpers::eventually("the expired session pruned", || async {
        let left = crate::helpers::count(
            &app,
            "SELECT count(*) AS n FROM users.refresh_tokens t JOIN users.users u \
             ON u.id = t.user_id WHERE u.email = 'witness@example.com'",
        )
        .await;
        (left == 0).then_some(())
    })
    .await;
    assert_problem(refresh(&app, witness).await, 401, "invalid_refresh_token").await;
    assert_problem(refresh(&app, r1).await, 401, "invalid_refresh_token").await;
    assert_problem(refresh(&app, r2).await, 401, "invalid_refresh_token").await;

    // A session signed in thirty-one days ago (its family's v7 id says
    // when), refreshed all along: over (`user.session_max_days`, 30).
    let other: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let r3 = other["refresh_token"].as_str().unwrap();
    let signed_in = chrono::Utc::now() - chrono::Duration::days(31);
    let family = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        u64::try_from(signed_in.timestamp()).unwrap(),
        0,
    ));
    diesel::sql_query(
        "UPDATE users.refresh_tokens SET family_id = $1 \
         WHERE revoked_at IS NULL AND spent_at IS NULL",
    )
    .bind::<diesel::sql_types::Uuid, _>(family)
    .execute(&mut app.db().await)
    .await
    .unwrap();
    assert_problem(refresh(&app, r3).await, 401, "invalid_refresh_token").await;
    // A session of now refreshes, its token expiring by the session's end.
    let fresh: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let r4 = fresh["refresh_token"].as_str().unwrap();
    assert_eq!(refresh(&app, r4).await.status(), 200);
}

/// An address longer than any account's is a wrong sign-in like any other
/// (and is never made a key of the per-account limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_with_an_address_longer_than_any_accounts_is_refused_as_such() {
    let app = spawn_app().await;
    let long = format!("{}@example.com", "a".repeat(300));
    assert_problem(app.login(&long, PASSWORD).await, 401, "invalid_credentials").await;
}

/// A spent token presented while its successor is being rotated: the
/// replay waits for that rotation and revokes the token it issued too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_during_a_rotation_revokes_the_token_that_rotation_issues() {
    use diesel_async::{RunQueryDsl as _, SimpleAsyncConnection as _};
    let app = spawn_app().await;
    let first = app.customer("ada@example.com").await;
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();
    let second: Value = refresh(&app, &r1).await.json().await.unwrap();
    assert!(second["refresh_token"].is_string(), "{second}");

    // Another rotation of the live token, in flight: the account's row
    // held as a sign-in holds it (shared), the live token locked and spent,
    // its successor inserted, not yet committed.
    let mut rotation = app.db().await;
    rotation
        .batch_execute(
            "BEGIN; \
             SELECT 1 FROM users.users FOR SHARE; \
             SELECT 1 FROM users.refresh_tokens WHERE spent_at IS NULL FOR UPDATE; \
             UPDATE users.refresh_tokens SET spent_at = now() WHERE spent_at IS NULL; \
             INSERT INTO users.refresh_tokens (id, family_id, user_id, token_hash, expires_at) \
             SELECT gen_random_uuid(), family_id, user_id, '\\x01', now() + interval '1 day' \
             FROM users.refresh_tokens LIMIT 1;",
        )
        .await
        .unwrap();
    // The replay of the first token, meanwhile.
    let replay = {
        let (client, url) = (app.client.clone(), app.url("/api/v1/auth/refresh"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"refresh_token": r1}))
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    rotation.batch_execute("COMMIT").await.unwrap();
    assert_problem(replay.await.unwrap(), 401, "invalid_refresh_token").await;

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let live: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM users.refresh_tokens WHERE revoked_at IS NULL",
    )
    .get_result(&mut app.db().await)
    .await
    .unwrap();
    assert_eq!(live.n, 0, "the rotation's token is revoked with its family");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_and_is_idempotent() {
    let app = spawn_app().await;
    let tokens = app.customer("ada@example.com").await;
    let token = tokens["refresh_token"].as_str().unwrap();
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url("/api/v1/auth/logout"))
            .json(&json!({"refresh_token": token}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    assert_problem(refresh(&app, token).await, 401, "invalid_refresh_token").await;
}

/// A token built by hand: header and claims as given, signature garbage or real.
fn forge(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401_problems_with_a_challenge() {
    let app = spawn_app().await;
    let key = app::compose::signing_key(&app.settings).unwrap();
    let policy = app.settings.auth.policy();
    let issuer = auth::Issuer::new(key, policy.clone());
    let now = chrono::Utc::now().timestamp();
    let claims = |iss: &str, aud: &str, exp: i64| auth::Claims {
        sub: uuid::Uuid::now_v7(),
        roles: vec![Role::Admin],
        iss: iss.into(),
        aud: aud.into(),
        exp,
        iat: now,
        jti: "t".into(),
    };
    let stranger = auth::Issuer::new(auth::SigningKey::generate().0, policy.clone());
    let kid = issuer.key().kid().to_owned();
    let body = serde_json::to_value(claims(&policy.issuer, &policy.audience, now + 60)).unwrap();

    let cases = [
        ("garbage", "not-a-jwt".to_owned()),
        (
            "alg none",
            forge(&json!({"alg": "none", "kid": kid}), &body, ""),
        ),
        (
            "HS256",
            forge(
                &json!({"alg": "HS256", "kid": kid, "typ": "JWT"}),
                &body,
                "c2ln",
            ),
        ),
        (
            "expired",
            issuer
                .sign(&claims(&policy.issuer, &policy.audience, now - 3600))
                .unwrap(),
        ),
        (
            "wrong issuer",
            issuer
                .sign(&claims("someone-else", &policy.audience, now + 60))
                .unwrap(),
        ),
        (
            "wrong audience",
            issuer
                .sign(&claims(&policy.issuer, "other-api", now + 60))
                .unwrap(),
        ),
        (
            "unknown kid",
            stranger
                .sign(&claims(&policy.issuer, &policy.audience, now + 60))
                .unwrap(),
        ),
    ];
    for (what, token) in cases {
        let response = app
            .client
            .post(app.url("/api/v1/products"))
            .bearer_auth(&token)
            .json(&product_json("T1"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer realm="shop", error="invalid_token""#,
            "{what}"
        );
        assert_problem(response, 401, "invalid_token").await;
    }
    // Public routes ignore a bad token rather than fail.
    let list = app
        .client
        .get(app.url("/api/v1/products"))
        .bearer_auth("not-a-jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_keys_are_honoured_until_their_tokens_expire() {
    let app = spawn_app().await;
    let old_key = app.settings.auth.signing_key_file.display().to_string();
    let old_token = app.token(&[Role::Admin]);
    let issuer = auth::Issuer::new(
        app::compose::signing_key(&app.settings).unwrap(),
        app.settings.auth.policy(),
    );
    let now = chrono::Utc::now().timestamp();
    let expired_old = issuer
        .sign(&auth::Claims {
            sub: uuid::Uuid::now_v7(),
            roles: vec![Role::Admin],
            iss: app.settings.auth.issuer.clone(),
            aud: app.settings.auth.audience.clone(),
            exp: now - 120,
            iat: now - 1000,
            jti: "old".into(),
        })
        .unwrap();

    // Rotate: a new signing key, the old one kept as a previous key.
    let new_key = fresh_key_path();
    let rotated = spawn_app_with(&[
        ("APP__AUTH__SIGNING_KEY_FILE", new_key.as_str()),
        ("APP__AUTH__PREVIOUS_KEY_FILES", old_key.as_str()),
    ])
    .await;
    let jwks: Value = rotated
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    let post = |token: String, sku: &'static str| {
        let client = rotated.client.clone();
        let url = rotated.url("/api/v1/products");
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&product_json(sku))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        post(old_token.clone(), "R1").await.status(),
        201,
        "old key, unexpired"
    );
    assert_eq!(
        post(rotated.token(&[Role::Admin]), "R2").await.status(),
        201,
        "new key"
    );
    assert_problem(post(expired_old, "R3").await, 401, "invalid_token").await;

    // Once the old key is dropped from the configuration, its tokens are unknown.
    let dropped = spawn_app_with(&[("APP__AUTH__SIGNING_KEY_FILE", new_key.as_str())]).await;
    let response = dropped
        .client
        .post(dropped.url("/api/v1/products"))
        .bearer_auth(old_token)
        .json(&product_json("R4"))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 401, "invalid_token").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("unknown key"),
        "{problem}"
    );
    // `test_settings` is what every app above was built from.
    assert!(test_settings(None, &[]).auth.previous_key_files.is_empty());
}
