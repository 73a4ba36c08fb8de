//! `spawn_app` and friends: a real server on a random port over a fresh database.

use std::path::Path;
use std::time::{Duration, Instant};

use app::{Application, Settings};
use kernel::Role;
use serde_json::Value;
use testkit::TestDatabase;

mod module_clients;
mod process;
mod queries;
mod requests;

pub(crate) use module_clients::contract_over_http;
pub use module_clients::module_client;
pub use process::{Shop, free_port, succeeded};
pub use queries::{Count, Note, UNDELIVERED, count, notifications, undelivered};
pub use requests::{
    get_as, get_json, post_as, post_json, send_json, subscribe_webhook, try_get_json,
};

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
    app::settings::load_from(config_dir(), "development", &vars).expect("test settings")
}

/// A shop serving every module locally, over a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// [`spawn_app`] with config overrides (env-var form).
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_running(extra).await.0
}

/// [`spawn_app_with`], and the task serving it: it ends once the shop has
/// stopped (`handle.stop()`), background tasks and pools included.
pub async fn spawn_app_running(
    extra: &[(&str, &str)],
) -> (TestApp, tokio::task::JoinHandle<anyhow::Result<()>>) {
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
    let running = tokio::spawn(application.run_until_stopped());
    let app = TestApp {
        address,
        client: crate::helpers::http(),
        handle,
        settings,
        _db: db,
    };
    (app, running)
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

    /// The URL of the app's database (for a second instance on it).
    pub fn database_url(&self) -> &str {
        self._db.url()
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

/// `rate_limit.per_second` for tests that spend a client's budget: one
/// request back every 55 minutes, so a spent budget stays spent through
/// the test however slowly the machine runs it (at one a second, a test
/// held up for a second between its requests saw its budget refilled).
pub const SLOW_RATE: &str = "0.0003";

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

/// Sends `method path` with an optional bearer `token` and JSON `body`.
pub async fn send(
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

/// The access token of a token response.
pub fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

/// Creates the product `sku` as an admin: its URL and its body.
pub async fn create(app: &TestApp, sku: &str) -> (String, Value) {
    let product: Value = app
        .post_product(&product_json(sku))
        .await
        .json()
        .await
        .unwrap();
    (
        app.url(&format!(
            "/api/v1/products/{}",
            product["id"].as_str().unwrap()
        )),
        product,
    )
}
