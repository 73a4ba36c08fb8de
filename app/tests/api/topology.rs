//! Extraction by configuration: the same binary as a catalog service and as
//! a gateway that forwards catalog routes to it, as two real processes.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{assert_problem, product_json, spawn_app_with, test_database};

/// A `shop` child process, killed when dropped; its stdout is collected.
struct Shop {
    child: Child,
    port: u16,
    logs: Arc<Mutex<String>>,
}

impl Shop {
    fn start(env: &[(&str, &str)]) -> Shop {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
        command
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

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_live(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(self.url("/health/live")).await
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

    fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: signalling our own child process.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0);
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

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_forwards_catalog_routes_to_the_extracted_catalog() {
    let db = test_database().await;
    // The extracted catalog: only the catalog module, with its database.
    let catalog = Shop::start(&[
        ("APP__MODULES__ENABLED", "catalog"),
        ("DATABASE_URL", db.url()),
    ]);
    catalog.wait_live().await;
    // The gateway: catalog remote, no database at all.
    let catalog_url = catalog.url("");
    let gateway = Shop::start(&[
        ("APP__MODULES__CATALOG__MODE", "remote"),
        ("APP__MODULES__CATALOG__URL", catalog_url.as_str()),
    ]);
    gateway.wait_live().await;
    let http = reqwest::Client::new();

    // Writes and reads through the gateway land in the catalog process.
    let created = http
        .post(gateway.url("/api/v1/products"))
        .header("x-request-id", "two-process-req-1")
        .json(&product_json("GW-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["x-request-id"], "two-process-req-1");
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = created.json().await.unwrap();
    let direct: Value = reqwest::get(catalog.url(&location))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(direct, body, "the product lives in the catalog process");
    let listed: Value = reqwest::get(gateway.url("/api/v1/products?limit=5"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], body["id"]);

    // Errors pass through unchanged.
    let duplicate = http
        .post(gateway.url("/api/v1/products"))
        .json(&product_json("gw-1"))
        .send()
        .await
        .unwrap();
    assert_problem(duplicate, 409, "duplicate_sku").await;

    // The request id travelled to the catalog and is in its logs.
    let catalog_logs = catalog.logs();
    assert!(
        catalog_logs
            .lines()
            .any(|l| l.contains("product created") && l.contains("two-process-req-1")),
        "catalog logs lack the forwarded request id:\n{catalog_logs}"
    );

    // Readiness of the gateway checks the remote catalog.
    let ready: Value = reqwest::get(gateway.url("/health/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["module:catalog"]["status"], "up");
    assert!(ready["checks"].get("database:catalog").is_none(), "{ready}");

    // Kill the catalog: the gateway degrades to clear 503s and says why.
    drop(catalog);
    let ready = reqwest::get(gateway.url("/health/ready")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["module:catalog"]["status"], "down");
    let unavailable = reqwest::get(gateway.url(&location)).await.unwrap();
    assert_problem(unavailable, 503, "upstream_unavailable").await;

    // SIGTERM shuts the gateway down cleanly.
    let status = gateway.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_process_serves_only_its_enabled_modules() {
    let app = spawn_app_with(&[("APP__MODULES__ENABLED", "")]).await;
    assert_problem(app.get("/api/v1/products").await, 404, "route_not_found").await;
    let ready: Value = app.get("/health/ready").await.json().await.unwrap();
    assert_eq!(ready["checks"], serde_json::json!({}));
}
