//! Zero-downtime restarts, proven: two `shop` instances behind HAProxy
//! (Debian's `haproxy`, health-checking `/health/ready`), customers reading
//! and checking out the whole time, while each instance in turn gets
//! SIGTERM and comes back. On SIGTERM an instance answers readiness with
//! 503 at once and serves on for its drain delay, so HAProxy takes it out
//! of rotation before it stops accepting. Not one request may fail, and
//! every order placed must exist exactly once, settled.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kernel::Role;
use payment_sandbox::cards;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::checkout::shop::{settled, stock, stocked_product};
use crate::helpers::{Shop, eventually, free_port, get_json, http, mint_token, send_json};
use crate::journey::url;
use crate::saga_crash::{Deployment, refs};

/// HAProxy in the foreground, killed (and its configuration removed) when dropped.
struct HaProxy {
    child: Child,
    config: std::path::PathBuf,
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
        drop(std::fs::remove_file(&self.config));
    }
}

/// The state HAProxy's checks give server `s{index}` (`UP`, `DOWN`,
/// `UP 1/2`...), from its stats page on `stats_port`.
async fn haproxy_status(stats_port: u16, index: usize) -> Option<String> {
    let csv = http()
        .get(format!("http://127.0.0.1:{stats_port}/stats;csv"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let server = format!("s{index}");
    csv.lines()
        .map(|line| line.split(',').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"shops") && fields.get(1) == Some(&server.as_str()))
        .and_then(|fields| fields.get(17).map(|s| (*s).to_owned()))
}

/// Waits until HAProxy's checks hold server `s{index}` to be `state`.
async fn haproxy_sees(stats_port: u16, index: usize, state: &str) {
    eventually(&format!("HAProxy to see s{index} {state}"), || async {
        (haproxy_status(stats_port, index).await.as_deref() == Some(state)).then_some(())
    })
    .await;
}

fn haproxy(port: u16, stats_port: u16, backends: &[u16]) -> HaProxy {
    // Health checks every 100 ms on readiness (a busy instance may take a
    // while to answer one); a server is out after two failed checks, well
    // within the drain delay, and back after two good ones. A request whose connection
    // fails or is closed unanswered is retried on the other server: safe,
    // since reads are reads and every write here is idempotent (PUT /cart,
    // POST /orders with an Idempotency-Key).
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  server s{i} 127.0.0.1:{p} check\n"))
        .collect();
    let config = format!(
        "global\n  maxconn 256\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n\
         \x20 retries 3\n  option redispatch\n  retry-on conn-failure empty-response\n\
         \x20 option http-server-close\n\
         frontend shop\n  bind 127.0.0.1:{port}\n  default_backend shops\n\
         backend shops\n  balance roundrobin\n  option httpchk GET /health/ready\n\
         \x20 timeout check 2s\n  default-server inter 100ms fall 2 rise 2\n{servers}\
         listen stats\n  bind 127.0.0.1:{stats_port}\n  stats enable\n  stats uri /stats\n"
    );
    let path = std::env::temp_dir().join(format!("shop-haproxy-{}.cfg", Uuid::new_v4()));
    std::fs::write(&path, config).unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("haproxy is installed (Debian's haproxy package; .ci/run installs it)");
    HaProxy {
        child,
        config: path,
    }
}

/// What the customers saw.
#[derive(Default)]
struct Outcomes {
    failures: Vec<String>,
    reads: usize,
    orders: Vec<(String, String)>,
}

async fn reader(base: String, product: String, stop: Arc<AtomicBool>, seen: Arc<Mutex<Outcomes>>) {
    let http = http();
    while !stop.load(Ordering::Relaxed) {
        let outcome = http
            .get(format!("{base}/api/v1/products/{product}"))
            .send()
            .await;
        let mut seen = seen.lock().unwrap();
        match outcome {
            Ok(r) if r.status() == 200 => seen.reads += 1,
            Ok(r) => seen.failures.push(format!("read answered {}", r.status())),
            Err(e) => seen.failures.push(format!("read failed: {e}")),
        }
    }
}

async fn buyer(
    base: String,
    token: String,
    product: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Outcomes>>,
) {
    let http = http();
    while !stop.load(Ordering::Relaxed) {
        let cart = http
            .put(format!("{base}/api/v1/cart"))
            .bearer_auth(&token)
            .json(&json!({"items": [{"product_id": product, "quantity": 1}]}))
            .send()
            .await;
        match cart {
            Ok(r) if r.status() == 200 => {}
            Ok(r) => {
                seen.lock()
                    .unwrap()
                    .failures
                    .push(format!("cart answered {}", r.status()));
                continue;
            }
            Err(e) => {
                seen.lock()
                    .unwrap()
                    .failures
                    .push(format!("cart failed: {e}"));
                continue;
            }
        }
        let placed = http
            .post(format!("{base}/api/v1/orders"))
            .bearer_auth(&token)
            .header("idempotency-key", Uuid::new_v4().to_string())
            .json(&json!({"payment_method": {"card_number": cards::SUCCEEDS}}))
            .send()
            .await;
        match placed {
            Ok(r) if matches!(r.status().as_u16(), 201 | 202) => {
                let order: Value = r.json().await.unwrap_or_default();
                let id = order["id"].as_str().unwrap_or_default().to_owned();
                seen.lock().unwrap().orders.push((token.clone(), id));
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                seen.lock()
                    .unwrap()
                    .failures
                    .push(format!("checkout answered {status}: {body}"));
            }
            Err(e) => seen
                .lock()
                .unwrap()
                .failures
                .push(format!("checkout failed: {e}")),
        }
    }
}

/// Waits until the instance at `base` answers readiness with 200.
async fn ready(base: &str) {
    let http = http();
    eventually(&format!("{base} to be ready"), || async {
        let r = http.get(format!("{base}/health/ready")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_restart_one_at_a_time_behind_haproxy_without_a_failed_request() {
    let deployment = Deployment::new().await;
    let env = deployment.env(&[
        // Long enough for HAProxy's checks (two failures, 100 ms apart,
        // each allowed 2 s) to take a stopping instance out, however busy.
        ("APP__SERVER__DRAIN_DELAY_MS", "5000"),
        // A saga left by a stopped instance is taken over quickly (a
        // step's deadline under two thirds of the lease, as checked).
        ("APP__ORDER__LEASE_SECS", "3"),
        ("APP__ORDER__STEP_TIMEOUT_MS", "1900"),
        ("APP__ORDER__RECOVERY_INTERVAL_MS", "200"),
    ]);
    let env = refs(&env);
    let ports = [free_port(), free_port()];
    let mut instances: Vec<Option<Shop>> = ports
        .iter()
        .map(|p| Some(Shop::start_on(*p, &env)))
        .collect();
    for instance in instances.iter().flatten() {
        ready(&instance.url("")).await;
    }
    let (front, stats) = (free_port(), free_port());
    let _proxy = haproxy(front, stats, &ports);
    let base = url(front);
    let http = http();
    eventually("HAProxy serves", || async {
        let r = http.get(format!("{base}/health/live")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    let admin = mint_token(&deployment.settings, &[Role::Admin]);
    let sku = format!("ROLL-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let product = stocked_product(&http, &base, &admin, &sku, 500, 100_000).await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Outcomes::default()));
    let mut load = Vec::new();
    for _ in 0..2 {
        load.push(tokio::spawn(reader(
            base.clone(),
            product.clone(),
            Arc::clone(&stop),
            Arc::clone(&seen),
        )));
    }
    for _ in 0..3 {
        let token = mint_token(&deployment.settings, &[Role::Customer]);
        load.push(tokio::spawn(buyer(
            base.clone(),
            token,
            product.clone(),
            Arc::clone(&stop),
            Arc::clone(&seen),
        )));
    }

    // Each instance in turn: SIGTERM, wait for it to exit, start it again
    // on its port, and wait for HAProxy to see it up before the next.
    for i in 0..ports.len() {
        haproxy_sees(stats, i, "UP").await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, port) in ports.iter().enumerate() {
        let old = instances[i].take().unwrap();
        let status = tokio::task::spawn_blocking(move || old.terminate())
            .await
            .unwrap();
        assert!(status.success(), "instance {i} exited with {status:?}");
        let fresh = Shop::start_on(*port, &env);
        ready(&fresh.url("")).await;
        instances[i] = Some(fresh);
        haproxy_sees(stats, i, "UP").await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.failures.is_empty(),
        "failed requests: {:#?}",
        seen.failures
    );
    assert!(seen.reads > 0 && !seen.orders.is_empty(), "load ran");

    // Every order answered exists exactly once and settles confirmed; no
    // other order exists; the stock moved by exactly those units.
    let mut per_customer: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for (token, id) in &seen.orders {
        let order = settled(&http, &base, token, id).await;
        assert_eq!(order["status"], "confirmed", "{order}");
        per_customer.entry(token).or_default().push(id);
    }
    for (token, ids) in &per_customer {
        let mut listed = Vec::new();
        let mut page = format!("{base}/api/v1/orders?limit=100");
        loop {
            let answer: Value = get_json(&http, &page, token).await;
            listed.extend(
                answer["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o["id"].as_str().unwrap().to_owned()),
            );
            match answer["next_cursor"].as_str() {
                Some(cursor) => page = format!("{base}/api/v1/orders?limit=100&cursor={cursor}"),
                None => break,
            }
        }
        let mut answered: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
        listed.sort_unstable();
        answered.sort_unstable();
        assert_eq!(
            listed, answered,
            "orders placed = orders answered, no doubles"
        );
    }
    let (on_hand, reserved) = stock(&http, &base, &admin, &sku).await;
    assert_eq!(reserved, 0);
    assert_eq!(on_hand, 100_000 - i64::try_from(seen.orders.len()).unwrap());
}

/// On SIGTERM, readiness answers 503 at once while the server still serves
/// everything else for the drain delay; then it stops and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_readiness_turns_503_while_the_server_drains() {
    let deployment = Deployment::new().await;
    let env = deployment.env(&[("APP__SERVER__DRAIN_DELAY_MS", "5000")]);
    let mut shop = Shop::start(&refs(&env));
    ready(&shop.url("")).await;
    let http = http();

    let signalled = std::time::Instant::now();
    shop.signal_term();
    eventually("readiness to turn 503", || async {
        let r = http.get(shop.url("/health/ready")).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    assert!(
        signalled.elapsed() < Duration::from_millis(4000),
        "503 at once, well within the drain delay"
    );
    let body: Value = send_json(http.get(shop.url("/health/ready"))).await;
    assert_eq!(body, json!({"status": "draining"}));
    // Still serving meanwhile.
    let products = http.get(shop.url("/api/v1/products")).send().await.unwrap();
    assert_eq!(products.status(), 200);
    assert!(
        shop.exit_status().is_none(),
        "still running within the drain delay"
    );

    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = shop.exit_status() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "did not stop after draining"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(5000),
        "stopped only after the drain delay: {:?}",
        signalled.elapsed()
    );
}
