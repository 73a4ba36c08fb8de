//! Administering accounts: who may see whom, roles and disabled accounts, `shop admin create`.

use kernel::Role;
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, TestApp, access, assert_problem, send, send_json, spawn_app, succeeded, test_database,
};

/// `GET path` as the holder of `tokens` (a token response), or anonymously.
async fn get(app: &TestApp, path: &str, tokens: Option<&Value>) -> reqwest::Response {
    send(app, reqwest::Method::GET, path, tokens.map(access), None).await
}

/// `PATCH path` with `body` as the holder of `tokens`.
async fn patch(app: &TestApp, path: &str, tokens: &Value, body: Value) -> reqwest::Response {
    send(
        app,
        reqwest::Method::PATCH,
        path,
        Some(access(tokens)),
        Some(body),
    )
    .await
}

/// The route of the account `tokens` belong to, `/api/v1/users/{id}`.
async fn user_path(app: &TestApp, tokens: &Value) -> String {
    let me: Value = get(app, "/api/v1/users/me", Some(tokens))
        .await
        .json()
        .await
        .unwrap();
    format!("/api/v1/users/{}", me["id"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_see_only_themselves_and_admins_see_all() {
    let app = spawn_app().await;
    let a = app.customer("a@example.com").await;
    app.customer("b@example.com").await;
    let admin = app.admin("root@example.com").await;
    let b = app
        .login("b@example.com", PASSWORD)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let b_path = user_path(&app, &b).await;

    // A asks for B by id: 404, not 403.
    assert_problem(get(&app, &b_path, Some(&a)).await, 404, "user_not_found").await;
    assert_problem(get(&app, &b_path, None).await, 401, "unauthenticated").await;
    assert_eq!(get(&app, &b_path, Some(&admin)).await.status(), 200);

    // The user list is for admins.
    assert_problem(
        get(&app, "/api/v1/users", None).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_problem(get(&app, "/api/v1/users", Some(&a)).await, 403, "forbidden").await;
    let page: Value = get(&app, "/api/v1/users?limit=2", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string());

    // A customer cannot use the admin route on themselves either.
    let a_path = user_path(&app, &a).await;
    let promote = patch(&app, &a_path, &a, json!({"roles": ["admin"]})).await;
    assert_problem(promote, 403, "forbidden").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_change_roles_and_disable_accounts() {
    let app = spawn_app().await;
    let b = app.customer("b@example.com").await;
    let admin = app.admin("root@example.com").await;
    let b_path = user_path(&app, &b).await;

    let changed: Value = patch(
        &app,
        &b_path,
        &admin,
        json!({"roles": ["customer", "admin"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(changed["roles"], json!(["customer", "admin"]));
    let empty = patch(&app, &b_path, &admin, json!({"roles": []})).await;
    assert_problem(empty, 422, "validation_failed").await;

    let disabled = patch(&app, &b_path, &admin, json!({"status": "disabled"})).await;
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
    let self_path = user_path(&app, &admin).await;
    let demote = patch(&app, &self_path, &admin, json!({"roles": ["customer"]})).await;
    assert_problem(demote, 422, "validation_failed").await;
}

/// An admin disabled or demoted by another keeps a valid access token for
/// its remaining minutes: with it they can neither undo that nor do it to
/// the other admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_disabled_or_demoted_cannot_undo_it_with_the_token_at_hand() {
    let app = spawn_app().await;
    let root = app.admin("root@example.com").await;
    let second = app.admin("second@example.com").await;
    let (root_path, second_path) = (user_path(&app, &root).await, user_path(&app, &second).await);

    let disabled = patch(&app, &second_path, &root, json!({"status": "disabled"})).await;
    assert_eq!(disabled.status(), 200);
    let undo = patch(&app, &second_path, &second, json!({"status": "active"})).await;
    assert_problem(undo, 403, "forbidden").await;
    let revenge = patch(&app, &root_path, &second, json!({"status": "disabled"})).await;
    assert_problem(revenge, 403, "forbidden").await;

    let active = patch(&app, &second_path, &root, json!({"status": "active"})).await;
    assert_eq!(active.status(), 200);
    let demoted = patch(&app, &second_path, &root, json!({"roles": ["customer"]})).await;
    assert_eq!(demoted.status(), 200);
    let promote = patch(
        &app,
        &second_path,
        &second,
        json!({"roles": ["customer", "admin"]}),
    )
    .await;
    assert_problem(promote, 403, "forbidden").await;
    let me: Value = get(&app, &second_path, Some(&root))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["roles"], json!(["customer"]), "{me}");
    assert_eq!(me["status"], "active", "{me}");
}

/// The environment `shop admin create` runs in here: the repository's
/// config, the test's database and keys.
fn shop_environment(
    command: &mut std::process::Command,
    database: &str,
    key: &str,
    service_key: &str,
) {
    command
        .env_remove("APP_ENV")
        .env(
            "APP_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config"),
        )
        .env("DATABASE_URL", database)
        .env("APP__AUTH__SIGNING_KEY_FILE", key)
        .env("APP__AUTH__SERVICE_KEY_FILE", service_key)
        .env("APP__LOG__FORMAT", "json");
}

#[test]
fn admin_create_command_makes_an_admin_who_can_sign_in() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(test_database());
    let key = crate::helpers::fresh_key_path();
    let service_key = crate::helpers::fresh_key_path();
    let shop = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_shop"));
        shop_environment(&mut command, db.url(), &key, &service_key);
        command
    };
    succeeded(shop().args([
        "admin",
        "create",
        "--email",
        "Root@Example.com",
        "--password",
        PASSWORD,
    ]));

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
            let tokens: Value = send_json(
                crate::helpers::http()
                    .post(format!("{address}/api/v1/auth/token"))
                    .json(&json!({"email": email, "password": PASSWORD})),
            )
            .await;
            let caller = verifier
                .verify(tokens["access_token"].as_str().unwrap())
                .await
                .unwrap();
            assert!(caller.has(Role::Admin), "{email}");
        }
        handle.stop();
    });
}

/// On a terminal, `shop admin create` without `--password` asks for it
/// twice and never echoes it (a password typed in clear stays in the
/// scrollback and in recordings of the session); two that differ create
/// nothing. `script` (util-linux) gives the command a terminal of its own.
#[test]
fn admin_create_asks_for_the_password_on_a_terminal_without_echo() {
    use std::io::{Read as _, Write as _};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(test_database());
    let (key, service_key) = (
        crate::helpers::fresh_key_path(),
        crate::helpers::fresh_key_path(),
    );
    // Runs `admin create` for `email` on a terminal, answering each
    // prompt in turn once it is shown; what the terminal showed, and
    // whether the command succeeded.
    let on_a_terminal = |email: &str, answers: [&str; 2]| -> (String, bool) {
        let command = format!(
            "'{}' admin create --email {email}",
            env!("CARGO_BIN_EXE_shop")
        );
        let mut script = Command::new("script");
        shop_environment(&mut script, db.url(), &key, &service_key);
        let mut child = script
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (shown, seen) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 || shown.send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        // The terminal `script` gave the command: its standard input.
        let script = child.id();
        let terminal = (0..300)
            .find_map(|_| {
                let children =
                    std::fs::read_to_string(format!("/proc/{script}/task/{script}/children"))
                        .unwrap_or_default();
                let found = children.split_whitespace().find_map(|shop| {
                    std::fs::read_link(format!("/proc/{shop}/fd/0"))
                        .ok()
                        .filter(|tty| tty.starts_with("/dev/pts"))
                });
                if found.is_none() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                found
            })
            .expect("the command's terminal");
        let echo_off = || {
            let modes = Command::new("stty")
                .arg("-F")
                .arg(&terminal)
                .arg("-a")
                .output()
                .unwrap();
            String::from_utf8_lossy(&modes.stdout)
                .split_whitespace()
                .any(|mode| mode == "-echo")
        };
        let mut screen = String::new();
        for (prompt, answer) in [
            ("Password of the new admin: ", answers[0]),
            ("again: ", answers[1]),
        ] {
            // Answered only once the prompt is up and the terminal's echo
            // off (the prompt is written first): typed earlier, the
            // terminal would echo it whatever the command does.
            while !screen.contains(prompt) {
                let chunk = seen
                    .recv_timeout(Duration::from_secs(30))
                    .unwrap_or_else(|_| panic!("no prompt {prompt:?} within 30 s: {screen}"));
                screen.push_str(&String::from_utf8_lossy(&chunk));
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !echo_off() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the terminal still echoes 30 s after the prompt {prompt:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            screen.clear();
            stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
            stdin.flush().unwrap();
        }
        let succeeded = child.wait().unwrap().success();
        while let Ok(chunk) = seen.recv_timeout(Duration::from_secs(5)) {
            screen.push_str(&String::from_utf8_lossy(&chunk));
        }
        (screen, succeeded)
    };

    let (screen, created) = on_a_terminal("tty@example.com", [PASSWORD, PASSWORD]);
    assert!(created, "{screen}");
    assert!(screen.contains("created admin tty@example.com"), "{screen}");
    assert!(
        !screen.contains(PASSWORD),
        "the password was echoed: {screen}"
    );

    let (screen, created) = on_a_terminal("typo@example.com", [PASSWORD, "plum kettle orbit 43"]);
    assert!(!created, "{screen}");
    assert!(screen.contains("differ"), "{screen}");
    assert!(
        !screen.contains(PASSWORD),
        "the password was echoed: {screen}"
    );
    let typo: i64 = runtime.block_on(async {
        use diesel_async::RunQueryDsl as _;
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        use diesel_async::AsyncConnection as _;
        let mut conn = diesel_async::AsyncPgConnection::establish(db.url())
            .await
            .unwrap();
        diesel::sql_query("SELECT count(*) AS n FROM users.users WHERE email = 'typo@example.com'")
            .get_result::<Count>(&mut conn)
            .await
            .unwrap()
            .n
    });
    assert_eq!(typo, 0, "two passwords that differ created an account");
}
