//! Administering accounts: who may see whom, roles and disabled accounts, `shop admin create`.

use kernel::Role;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, access, assert_problem, send, spawn_app, test_database};

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
