//! Health probes, metrics, Swagger UI and the OpenAPI document.

use kernel::Role;
use payment_sandbox::cards;
use serde_json::Value;

use crate::checkout::shop::{fill_cart, place, settled, stocked_product};
use crate::helpers::{eventually, product_json, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_and_readiness_are_ok_with_a_database() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health/live").await.status(), 200);
    let ready = app.ready().await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database:catalog"]["status"], "up");
    // Anyone else learns the status, not what runs where.
    let anonymous: Value = app.get("/health/ready").await.json().await.unwrap();
    assert_eq!(anonymous, serde_json::json!({"status": "ready"}));
    let customer: Value = app
        .client
        .get(app.url("/health/ready"))
        .bearer_auth(app.token(&[Role::Customer]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(customer, serde_json::json!({"status": "ready"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_naming_the_database_when_it_is_down() {
    // A port nobody listens on: the pool cannot connect.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("postgres://postgres@127.0.0.1:{port}/shop");
    let app = spawn_app_with(&[
        ("DATABASE_URL", url.as_str()),
        ("APP__DATABASE__CONNECT_TIMEOUT_MS", "500"),
        ("APP__DATABASE__ACQUIRE_TIMEOUT_MS", "500"),
    ])
    .await;

    let ready = app.ready().await;
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["database:catalog"]["status"], "down");
    // Liveness does not depend on the database.
    assert_eq!(app.get("/health/live").await.status(), 200);
    // Requests that need it fail fast with a 503 problem, not a 500.
    let response = app.get("/api/v1/products").await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_requests_by_route_template_and_pool_use() {
    let app = spawn_app().await;
    let created: Value = app
        .post_product(&product_json("M1"))
        .await
        .json()
        .await
        .unwrap();
    app.get(&format!(
        "/api/v1/products/{}",
        created["id"].as_str().unwrap()
    ))
    .await;
    // A method of the client's own invention is counted, but not as a
    // series of its own: hostile tokens must not grow the recorder.
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    let answer = app
        .client
        .request(brew, app.url("/api/v1/products"))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_client_error(), "{}", answer.status());

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            r#"http_requests_total{method="GET",route="/api/v1/products/{id}",status="200"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{method="other""#),
        "{text}"
    );
    assert!(!text.contains("BREW"), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains(r#"db_pool_connections{module="catalog",state="in_use"}"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_module_calls_messaging_sagas_pools_and_the_process() {
    let app = spawn_app().await;
    let http = crate::helpers::http();
    let base = app.url("");
    let admin = app.token(&[Role::Admin]);
    let customer = app.token(&[Role::Customer]);
    let product = stocked_product(&http, &base, &admin, "MET-CHECKOUT", 1000, 3).await;
    fill_cart(&http, &base, &customer, &product, 1).await;
    let placed: Value = place(&http, &base, &customer, "metrics-1", cards::SUCCEEDS)
        .await
        .json()
        .await
        .unwrap();
    let order = settled(&http, &base, &customer, placed["id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "confirmed", "{order}");

    // RED per module call (the in-process implementations, named as the
    // remote ones are), messaging and saga gauges read at the scrape, pool
    // waits, the process, readiness.
    let expected = [
        r#"module_calls_total{module="inventory",method="reserve",outcome="ok"} 1"#,
        r#"module_calls_total{module="payment",method="authorize",outcome="ok"} 1"#,
        r#"module_call_duration_seconds_bucket{module="payment",method="capture",le="#,
        r#"outbox_backlog{module="order"} 0"#,
        r#"outbox_lag_seconds{module="inventory"} 0"#,
        r#"dead_letters{module="notification"} 0"#,
        "\nsagas_in_flight 0\n",
        "\nsaga_oldest_in_flight_age_seconds 0\n",
        r#"db_pool_wait_seconds_bucket{module="order",le="#,
        "\nprocess_resident_memory_bytes ",
        "\nprocess_open_fds ",
        "\nhealth_ready 1\n",
        "\ntable_gauges_read 1\n",
    ];
    let text = eventually("every metric at its settled value", || async {
        let text = app.get("/metrics").await.text().await.ok()?;
        expected.iter().all(|m| text.contains(m)).then_some(text)
    })
    .await;
    for m in expected {
        assert!(text.contains(m), "{m} missing in:\n{text}");
    }
}

/// `health_ready` on `/metrics` says what `/health/ready` says. A gauge
/// read from a table too slowly (a table locked by a migration, a count
/// over a huge backlog) is not the instance being unready, where every
/// instance would raise the critical alert at once: it is
/// `table_gauges_read 0`, with an alert of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_gauge_too_slow_to_read_is_stale_not_unready() {
    use diesel_async::SimpleAsyncConnection as _;
    let app = spawn_app().await;
    // Every pool's first connection opened before the timed scrape.
    assert_eq!(app.ready().await.status(), 200);
    let mut lock = app.db().await;
    lock.batch_execute("BEGIN; LOCK TABLE catalog.outbox IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.contains("\nhealth_ready 1\n"), "{text}");
    assert!(text.contains("\ntable_gauges_read 0\n"), "{text}");
    let ready = app.ready().await;
    let status = ready.status();
    let body = ready.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    lock.batch_execute("ROLLBACK").await.unwrap();
    eventually("the gauges read again", || async {
        let text = app.get("/metrics").await.text().await.ok()?;
        text.contains("\ntable_gauges_read 1\n").then_some(())
    })
    .await;
}

/// `/metrics` is open to anyone: a flood of scrapes must not become a
/// flood of queries on the modules' tables (taking the pools' connections
/// from the API). The tables' gauges are read once and taken as known for
/// a second: a scrape within it shows what the last read found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_scrapes_reads_the_tables_at_most_once_a_second() {
    use diesel_async::RunQueryDsl as _;
    let app = spawn_app().await;
    // Opened first: the insert below must follow the read closely.
    let mut db = app.db().await;
    let none = r#"dead_letters{module="catalog"} 0"#;
    let one = r#"dead_letters{module="catalog"} 1"#;
    eventually("a scrape that read the tables", || async {
        let text = app.get("/metrics").await.text().await.ok()?;
        text.contains(none).then_some(())
    })
    .await;
    let read = std::time::Instant::now();
    diesel::sql_query(
        "INSERT INTO catalog.dead_letters \
         (id, handler, event_id, event_type, envelope, attempts, last_error) \
         VALUES (gen_random_uuid(), 'test', gen_random_uuid(), 't', '{}', 1, 'e')",
    )
    .execute(&mut db)
    .await
    .unwrap();
    // A burst right after: every scrape answers from that read.
    let sent = read.elapsed();
    let scrapes = (0..50).map(|_| app.get("/metrics"));
    let texts: Vec<String> =
        futures_util::future::join_all(scrapes.map(|s| async { s.await.text().await.unwrap() }))
            .await;
    if sent < std::time::Duration::from_millis(800) {
        let stale = texts.iter().filter(|t| t.contains(none)).count();
        assert!(stale > 0, "every scrape of the burst read the tables again");
    } else {
        eprintln!("the burst left {sent:?} after the read: too late to tell");
    }
    // Read again a second on.
    eventually("the dead letter counted", || async {
        let text = app.get("/metrics").await.text().await.ok()?;
        text.contains(one).then_some(())
    })
    .await;
}

/// `/health/ready` is open to anyone and not rate limited: a flood of it
/// must not become a flood of pings taking the pools' connections from the
/// API. Each database's ping is taken as known for a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_readiness_checks_pings_each_database_at_most_once_a_second() {
    use crate::helpers::count;
    let app = spawn_app().await;
    assert_eq!(app.ready().await.status(), 200);
    // The database's committed transactions, once every backend has
    // reported its own: one that reported less than a second before goes
    // idle for ten before it reports again (PGSTAT_IDLE_INTERVAL).
    let commits = || async {
        tokio::time::sleep(std::time::Duration::from_secs(11)).await;
        count(
            &app,
            "SELECT xact_commit AS n FROM pg_stat_database WHERE datname = current_database()",
        )
        .await
    };
    // What runs on its own (relays, jobs, these counts' own connections):
    // about a thousand in the time.
    let started = std::time::Instant::now();
    let start = commits().await;
    let before = commits().await;
    let idle_window = started.elapsed() / 2;
    let idle = before - start;
    let flooded = std::time::Instant::now();
    let checks = (0..300).map(|_| app.get("/health/ready"));
    for response in futures_util::future::join_all(checks).await {
        assert_eq!(response.status(), 200);
    }
    let during = commits().await - before;
    // The idle rate over the flood's window, which its own length makes
    // longer; a ping per module's pool and check would be 1,800 more (six
    // pools).
    let expected = idle as f64 * flooded.elapsed().as_secs_f64() / idle_window.as_secs_f64();
    eprintln!("{idle} commits while idle, {during} during the flood ({expected:.0} expected)");
    assert!(
        (during as f64) < expected + 900.0,
        "{during} commits during the flood, {expected:.0} expected from the idle rate: each check pinged"
    );
}

/// Past `server.max_connections` open client connections, a new one
/// waits in the listen backlog until one closes: a flood of connections
/// holds no more descriptors than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_new_connection_waits_for_one_to_close() {
    use tokio::io::AsyncWriteExt as _;
    let app = spawn_app_with(&[
        ("APP__SERVER__MAX_CONNECTIONS", "2"),
        ("APP__SERVER__WORKERS", "1"),
    ])
    .await;
    let address = app.url("").trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..2 {
        // A head begun and not finished: the connection stays open (for
        // actix-web's 5 s head timeout).
        let mut stream = tokio::net::TcpStream::connect(address.as_str())
            .await
            .unwrap();
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: shop\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    let waited = crate::helpers::http_builder()
        .timeout(std::time::Duration::from_secs(1))
        .build()
        .unwrap()
        .get(app.url("/health/live"))
        .send()
        .await;
    assert!(
        waited.as_ref().is_err_and(reqwest::Error::is_timeout),
        "a third connection was served: {waited:?}"
    );
    drop(held.pop());
    let served = app.get("/health/live").await;
    assert_eq!(served.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_swagger_ui_the_spec_is_still_served() {
    // What production does unless server.swagger_ui is set.
    let app = spawn_app_with(&[("APP__SERVER__SWAGGER_UI", "false")]).await;
    assert_eq!(app.get("/swagger-ui/").await.status(), 404);
    let spec = app.get("/api-docs/openapi.json").await;
    assert_eq!(spec.status(), 200);
    let spec: Value = spec.json().await.unwrap();
    assert_eq!(spec, serde_json::to_value(app::openapi::api_doc()).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_and_the_spec_are_served() {
    let app = spawn_app().await;
    let ui = app.get("/swagger-ui/").await;
    assert_eq!(ui.status(), 200);
    assert!(
        ui.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let no_slash = crate::helpers::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/swagger-ui"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_slash.status(), 307);

    let spec: Value = app
        .get("/api-docs/openapi.json")
        .await
        .json()
        .await
        .unwrap();
    let products = &spec["paths"]["/api/v1/products"];
    let product = &spec["paths"]["/api/v1/products/{id}"];
    assert!(products["get"].is_object() && products["post"].is_object());
    assert!(product["get"].is_object() && product["patch"].is_object());
    assert_eq!(products["post"]["security"][0]["bearer"][0], "admin");
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
}

/// The committed `openapi/openapi.json` is what the code generates.
#[test]
fn committed_openapi_matches_the_code() {
    let generated = app::openapi::api_doc_json().unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: regenerate it with `cargo run -- openapi > openapi/openapi.json`"
    );
}
