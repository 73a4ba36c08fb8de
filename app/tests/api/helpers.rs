//! `spawn_app` and friends: a real server on a random port over a fresh database.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use app::{Application, Settings};
use kernel::Role;
use serde_json::Value;
use testkit::TestDatabase;

/// Every module's migrations, as the template is built from.
pub fn all_migrations() -> Vec<db::ModuleMigrations> {
    app::modules::ModuleName::ALL
        .iter()
        .filter_map(|m| app::database::migrations(*m))
        .collect()
}

/// A fresh database with every module migrated.
pub async fn test_database() -> TestDatabase {
    TestDatabase::create(&all_migrations()).await
}

/// The config directory of the repository.
pub fn config_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config"))
}

/// A running shop.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub handle: app::startup::AppHandle,
    pub settings: Settings,
    // Dropped last: the server is stopped before its database goes.
    _db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.handle.stop();
    }
}

/// A fresh signing-key path (the key is generated on first use).
pub fn fresh_key_path() -> String {
    testkit::scratch_dir("shop-test-keys")
        .join(format!("{}.pem", uuid::Uuid::new_v4().simple()))
        .display()
        .to_string()
}

/// A fresh directory for the file mail transport.
pub fn fresh_mail_dir() -> String {
    testkit::scratch_dir("shop-test-mail")
        .join(uuid::Uuid::new_v4().simple().to_string())
        .display()
        .to_string()
}

/// Settings for a test server: the repository's config, a random port on
/// loopback, one worker, a signing key of its own, rate limits out of the
/// way, plus `extra` env-style overrides.
pub fn test_settings(database_url: Option<&str>, extra: &[(&str, &str)]) -> Settings {
    let mut vars: Vec<(String, String)> = vec![
        ("APP__AUTH__SIGNING_KEY_FILE".into(), fresh_key_path()),
        ("APP__AUTH__SERVICE_KEY_FILE".into(), fresh_key_path()),
        (
            "APP__NOTIFICATION__EMAIL__FILE_DIR".into(),
            fresh_mail_dir(),
        ),
        ("APP__NOTIFICATION__POLL_INTERVAL_MS".into(), "50".into()),
        ("APP__EVENTS__POLL_INTERVAL_MS".into(), "100".into()),
        ("APP__RATE_LIMIT__PER_SECOND".into(), "10000".into()),
        ("APP__RATE_LIMIT__BURST".into(), "10000".into()),
        (
            "APP__RATE_LIMIT__LOGIN_PER_MINUTE_PER_IP".into(),
            "10000".into(),
        ),
        (
            "APP__RATE_LIMIT__LOGIN_PER_MINUTE_PER_ACCOUNT".into(),
            "10000".into(),
        ),
        (
            "APP__RATE_LIMIT__REGISTRATIONS_PER_MINUTE_PER_IP".into(),
            "10000".into(),
        ),
        ("APP__SERVER__HOST".into(), "127.0.0.1".into()),
        ("APP__SERVER__PORT".into(), "0".into()),
        ("APP__SERVER__WORKERS".into(), "1".into()),
        ("APP__SERVER__SHUTDOWN_TIMEOUT_SECS".into(), "1".into()),
        ("APP__DATABASE__MIGRATE_ON_START".into(), "false".into()),
        ("APP__DATABASE__EMBEDDED".into(), "false".into()),
    ];
    if let Some(url) = database_url {
        vars.push(("DATABASE_URL".into(), url.into()));
    }
    vars.extend(extra.iter().map(|(k, v)| ((*k).into(), (*v).into())));
    Settings::load_from(config_dir(), "development", &vars).expect("test settings")
}

/// A shop serving every module locally, over a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// [`spawn_app`] with config overrides (env-var form).
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        telemetry::init_logging(telemetry::LogFormat::Json, "info");
    }
    let db = test_database().await;
    let settings = test_settings(Some(db.url()), extra);
    let application = Application::build(settings.clone())
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    let handle = application.handle();
    tokio::spawn(application.run_until_stopped());
    TestApp {
        address,
        client: crate::helpers::http(),
        handle,
        settings,
        _db: db,
    }
}

/// An HTTP client for a test (rustls needs its crypto provider installed
/// before any client is built).
pub fn http() -> reqwest::Client {
    http_builder().build().unwrap()
}

/// `GET url` with a fresh client (what `reqwest::get` does, TLS provider installed).
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    http().get(url).send().await
}

/// A client builder for a test, TLS provider installed.
pub fn http_builder() -> reqwest::ClientBuilder {
    remote::tls::install_crypto_provider();
    reqwest::Client::builder()
}

/// An access token for a made-up user with `roles`, signed with `settings`' key.
pub fn mint_token(settings: &Settings, roles: &[Role]) -> String {
    let key = app::compose::signing_key(settings).unwrap();
    auth::Issuer::new(key, settings.auth.policy())
        .issue(uuid::Uuid::now_v7(), roles)
        .unwrap()
        .token
}

impl TestApp {
    /// A direct connection to the app's database.
    pub async fn db(&self) -> diesel_async::AsyncPgConnection {
        use diesel_async::AsyncConnection as _;
        diesel_async::AsyncPgConnection::establish(self._db.url())
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// An access token for a made-up user with `roles`.
    pub fn token(&self, roles: &[Role]) -> String {
        mint_token(&self.settings, roles)
    }

    /// Creates a product as an admin.
    pub async fn post_product(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/products"))
            .bearer_auth(self.token(&[Role::Admin]))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Registers a customer over HTTP.
    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/users"))
            .json(
                &serde_json::json!({"email": email, "password": password, "display_name": "Test"}),
            )
            .send()
            .await
            .unwrap()
    }

    /// Signs in over HTTP.
    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/auth/token"))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Registers and signs in a customer; returns the token response.
    pub async fn customer(&self, email: &str) -> Value {
        assert_eq!(self.register(email, PASSWORD).await.status(), 201);
        let response = self.login(email, PASSWORD).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Creates an admin account (as `shop admin create` does) and signs in.
    pub async fn admin(&self, email: &str) -> Value {
        app::admin::create_admin(
            &self.settings,
            email.into(),
            PASSWORD.into(),
            "Admin".into(),
        )
        .await
        .unwrap();
        let response = self.login(email, PASSWORD).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// `GET /health/ready` as an admin: with the checks' details.
    pub async fn ready(&self) -> reqwest::Response {
        self.client
            .get(self.url("/health/ready"))
            .bearer_auth(self.token(&[Role::Admin]))
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }
}

/// An in-process call context for a made-up user with `role`.
pub fn caller(role: Role) -> kernel::CallContext {
    kernel::CallContext::background().with_caller(kernel::Caller {
        user_id: uuid::Uuid::now_v7(),
        roles: vec![role],
    })
}

/// Call contexts carrying an admin's and a customer's token for `app`.
pub fn bearer_contexts(app: &TestApp) -> (kernel::CallContext, kernel::CallContext) {
    (
        kernel::CallContext::background().with_bearer_token(app.token(&[Role::Admin])),
        kernel::CallContext::background().with_bearer_token(app.token(&[Role::Customer])),
    )
}

/// The resilience policy `dependency` gets with the default settings.
pub fn policy(dependency: &str) -> std::sync::Arc<resilience::Policy> {
    let dependency = app::compose::Dependency::parse(dependency).expect("a known dependency");
    app::compose::Policies::new(&test_settings(None, &[])).get(dependency)
}

/// A password that meets the policy.
pub const PASSWORD: &str = "plum kettle orbit 42";

/// A valid product body.
pub fn product_json(sku: &str) -> Value {
    serde_json::json!({
        "sku": sku,
        "name": format!("Product {sku}"),
        "price": {"amount_minor": 1299, "currency": "EUR"}
    })
}

/// Asserts a problem+json response and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], format!("urn:shop:problem:{code}"));
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// A `shop` child process, killed when dropped; its stdout is collected.
pub struct Shop {
    child: Child,
    pub port: u16,
    logs: Arc<Mutex<String>>,
}

impl Shop {
    pub fn start(env: &[(&str, &str)]) -> Shop {
        Shop::start_on(free_port(), env)
    }

    /// Starts on a port chosen beforehand (to point another process at it).
    pub fn start_on(port: u16, env: &[(&str, &str)]) -> Shop {
        Shop::run(port, &[], env)
    }

    /// `shop <args>` with `port` as the server's port.
    pub fn run(port: u16, args: &[&str], env: &[(&str, &str)]) -> Shop {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "APP_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../config"),
            )
            .env("APP__SERVER__HOST", "127.0.0.1")
            .env("APP__SERVER__PORT", port.to_string())
            .env("APP__SERVER__WORKERS", "1")
            .env("APP__LOG__FORMAT", "json")
            .env("APP__DATABASE__EMBEDDED", "false")
            // Keys of its own unless the test shares some: never a file in
            // the working directory.
            .env("APP__AUTH__SIGNING_KEY_FILE", fresh_key_path())
            .env("APP__AUTH__SERVICE_KEY_FILE", fresh_key_path())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        Shop { child, port, logs }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn wait_live(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = crate::helpers::get(self.url("/health/live")).await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "shop on port {} did not come up; logs:\n{}",
            self.port,
            self.logs.lock().unwrap()
        );
    }

    /// Waits up to 30 s for the process to end by itself (a failpoint
    /// aborted it); whether it did.
    pub async fn exited(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM and returns at once.
    pub fn signal_term(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: signalling our own child process.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0);
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal_term();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

/// A port nobody listens on right now.
///
/// A port handed to a child process is free when chosen and bound by the
/// child a moment later. In between, nothing else of this suite may take it:
/// ports come from below the kernel's ephemeral range (32768 and up on
/// Linux), where outgoing connections never land, and each is claimed for
/// the whole run by a file created exclusively, so two test processes never
/// pick the same one. Claims older than an hour are stale.
pub fn free_port() -> u16 {
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000;
    let claims = std::env::temp_dir().join("shop-test-ports");
    std::fs::create_dir_all(&claims).unwrap();
    loop {
        let port = FIRST + (uuid::Uuid::new_v4().as_u128() % u128::from(COUNT)) as u16;
        let claim = claims.join(port.to_string());
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&claim)
        {
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
            let stale = std::fs::metadata(&claim)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|at| at.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600));
            if stale {
                drop(std::fs::remove_file(&claim));
            }
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Waits (up to 20 s) until `check` returns `Some`, polling.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    // Generous: a loaded CI machine is slow, and only a failure waits it out.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it returns `Ok`, for as long as the work keeps moving:
/// `Err(left)` says how much is left, and the wait fails only when `left`
/// has not shrunk for `stall`. A loaded machine finishes later; a stuck
/// one still fails, with what was left.
pub async fn until_done<T, F, Fut>(what: &str, stall: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, u64>>,
{
    let mut least = u64::MAX;
    let mut moved = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(left) if left < least => {
                least = left;
                moved = Instant::now();
            }
            Err(_) => {}
        }
        assert!(
            moved.elapsed() < stall,
            "{what}: {least} left and no progress for {stall:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
