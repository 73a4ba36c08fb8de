//! `spawn_app` and friends: a real server on a random port over a fresh database.

use std::path::Path;

use app::{Application, Settings};
use serde_json::Value;
use testkit::TestDatabase;

/// Every module's migrations, as the template is built from.
pub fn all_migrations() -> Vec<db::ModuleMigrations> {
    app::modules::ModuleName::ALL
        .iter()
        .map(|m| app::database::migrations(*m))
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
    pub handle: actix_web::dev::ServerHandle,
    // Dropped last: the server is stopped before its database goes.
    _db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// Settings for a test server: the repository's config, a random port on
/// loopback, one worker, plus `extra` env-style overrides.
pub fn test_settings(database_url: Option<&str>, extra: &[(&str, &str)]) -> Settings {
    let mut vars: Vec<(String, String)> = vec![
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
    let application = Application::build(settings).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", application.port());
    let handle = application.handle();
    tokio::spawn(application.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::new(),
        handle,
        _db: db,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_product(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/products"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }
}

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
