//! Extraction by configuration: the same binary as a catalog service and as
//! a gateway that forwards catalog routes to it, as two real processes.

use kernel::Role;
use serde_json::Value;

use diesel_async::{AsyncConnection as _, RunQueryDsl as _};

use crate::helpers::{
    Shop, assert_problem, eventually, free_port, get_json, mint_token, product_json,
    spawn_app_with, test_database, test_settings,
};
use crate::saga_crash::{Deployment, refs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_forwards_catalog_routes_to_the_extracted_catalog() {
    let db = test_database().await;
    let gateway_port = free_port();
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    let key_file = crate::helpers::fresh_key_path();
    // The catalog's events (and the stock events it follows) cross processes.
    let namespace = format!("test-{}", uuid::Uuid::new_v4().simple());
    let broker = [
        ("APP__EVENTS__TRANSPORT", "rabbitmq"),
        ("APP__EVENTS__RABBITMQ__NAMESPACE", namespace.as_str()),
        ("APP__EVENTS__RABBITMQ__QUEUE_TTL_MS", "120000"),
    ];
    // The extracted catalog: only the catalog module, with its database; it
    // verifies tokens with the keys the gateway's user module publishes.
    let catalog = Shop::start(
        &[
            &broker[..],
            &[
                ("APP__MODULES__ENABLED", "catalog"),
                ("APP__MODULES__USER__MODE", "remote"),
                ("APP__MODULES__USER__URL", gateway_url.as_str()),
                ("APP__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1"),
                ("DATABASE_URL", db.url()),
            ],
        ]
        .concat(),
    );
    catalog.wait_live().await;
    // The gateway: the user module here, the catalog forwarded.
    let catalog_url = catalog.url("");
    let gateway = Shop::start_on(
        gateway_port,
        &[
            &broker[..],
            &[
                ("APP__MODULES__CATALOG__MODE", "remote"),
                ("APP__MODULES__CATALOG__URL", catalog_url.as_str()),
                ("APP__AUTH__SIGNING_KEY_FILE", key_file.as_str()),
                ("DATABASE_URL", db.url()),
            ],
        ]
        .concat(),
    );
    gateway.wait_live().await;
    let gateway_settings = test_settings(
        Some(db.url()),
        &[("APP__AUTH__SIGNING_KEY_FILE", key_file.as_str())],
    );
    let admin = mint_token(&gateway_settings, &[Role::Admin]);
    let http = crate::helpers::http();

    // Writes and reads through the gateway land in the catalog process.
    // Without a token the catalog process refuses the write.
    let anonymous = http
        .post(gateway.url("/api/v1/products"))
        .json(&product_json("GW-0"))
        .send()
        .await
        .unwrap();
    assert_problem(anonymous, 401, "unauthenticated").await;

    let created = http
        .post(gateway.url("/api/v1/products"))
        .header("x-request-id", "two-process-req-1")
        .bearer_auth(&admin)
        .json(&product_json("GW-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["x-request-id"], "two-process-req-1");
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = created.json().await.unwrap();
    let direct: Value = crate::helpers::get(catalog.url(&location))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(direct, body, "the product lives in the catalog process");
    let listed: Value = crate::helpers::get(gateway.url("/api/v1/products?limit=5"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], body["id"]);

    // Errors pass through unchanged.
    let duplicate = http
        .post(gateway.url("/api/v1/products"))
        .bearer_auth(&admin)
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

    // The catalog process verified the token with the gateway's public keys.
    let published: Value = crate::helpers::get(gateway.url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cached: Value = crate::helpers::get(catalog.url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(published, cached);

    // Readiness of the gateway checks the remote catalog.
    let ready: Value = get_json(&http, gateway.url("/health/ready"), &admin).await;
    assert_eq!(ready["checks"]["module:catalog"]["status"], "up");

    // The gateway's metrics name a forward's route as the module's do.
    let read = crate::helpers::get(gateway.url(&location)).await.unwrap();
    assert_eq!(read.status(), 200);
    let metrics = crate::helpers::get(gateway.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"route="/api/v1/products/{id}""#),
        "{metrics}"
    );
    assert!(!metrics.contains("{tail"), "{metrics}");
    assert!(ready["checks"].get("database:catalog").is_none(), "{ready}");

    // Kill the catalog: the gateway degrades to clear 503s and says why.
    drop(catalog);
    // A remote's readiness is known for a second (`ops::PROBE_REUSE`).
    let ready = eventually("the catalog seen down", || async {
        let ready = http
            .get(gateway.url("/health/ready"))
            .bearer_auth(&admin)
            .send()
            .await
            .ok()?;
        assert_eq!(
            ready.status(),
            200,
            "one module down is no reason to leave rotation"
        );
        let ready: Value = ready.json().await.ok()?;
        (ready["checks"]["module:catalog"]["status"] == "down").then_some(ready)
    })
    .await;
    assert_eq!(ready["status"], "degraded");
    let unavailable = crate::helpers::get(gateway.url(&location)).await.unwrap();
    assert_problem(unavailable, 503, "upstream_unavailable").await;
    // The dead letters gather the catalog's with the gateway's own: without
    // the catalog's, the list says so rather than look complete.
    let dead_letters = http
        .get(gateway.url("/api/v1/admin/dead-letters"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(dead_letters.status(), 503);
    let problem: Value = dead_letters.json().await.unwrap();
    assert!(
        ["events_unavailable", "dependency_circuit_open"]
            .contains(&problem["code"].as_str().unwrap()),
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("catalog"),
        "{problem}"
    );

    // SIGTERM shuts the gateway down cleanly.
    let status = gateway.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_serves_only_its_enabled_modules() {
    let app = spawn_app_with(&[("APP__MODULES__ENABLED", "")]).await;
    // The API's routes exist; their modules are not served here: 503 naming
    // the module, for every module, not 404.
    for (path, module) in [
        ("/api/v1/products", "catalog"),
        ("/api/v1/categories/x", "catalog"),
        ("/api/v1/users/me", "user"),
        ("/api/v1/inventory/SKU-1", "inventory"),
        ("/api/v1/orders", "order"),
        ("/api/v1/cart", "order"),
        ("/api/v1/payments/x", "payment"),
        ("/api/v1/notifications", "notification"),
    ] {
        let body = assert_problem(app.get(path).await, 503, "module_not_served").await;
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("the {module} module")),
            "{path}: {detail}"
        );
    }
    assert_problem(
        app.get("/api/v1/nothing-here").await,
        404,
        "route_not_found",
    )
    .await;
    // Nothing to check, and no keys to verify an admin with: the status alone.
    let ready: Value = app.ready().await.json().await.unwrap();
    assert_eq!(ready, serde_json::json!({"status": "ready"}));
}

/// A process that serves no module (a gateway) needs no broker, even on
/// the RabbitMQ transport a split deployment gives every process: it
/// starts, serves and is ready while the broker cannot be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_serving_no_module_starts_without_the_broker() {
    let nowhere = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let app = spawn_app_with(&[
        ("APP__MODULES__ENABLED", ""),
        ("APP__EVENTS__TRANSPORT", "rabbitmq"),
        ("APP__EVENTS__RABBITMQ__URL", nowhere.as_str()),
    ])
    .await;
    assert_problem(app.get("/api/v1/products").await, 503, "module_not_served").await;
    assert_eq!(app.ready().await.status(), 200);
}

/// Split with the broker, an event published while its subscriber's process
/// has never run is kept for it: the publisher declares every subscriber's
/// queue, and an event the broker cannot route is not marked delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_before_its_subscriber_ever_ran_reaches_it() {
    let deployment = Deployment::new().await;
    let user_port = free_port();
    let user_url = format!("http://127.0.0.1:{user_port}");
    let users = Shop::start_on(
        user_port,
        &refs(&deployment.split_env(&[("APP__MODULES__ENABLED", "user")])),
    );
    users.wait_live().await;
    let http = crate::helpers::http();
    let registered = http
        .post(users.url("/api/v1/users"))
        .json(&serde_json::json!({
            "email": "early@example.com",
            "password": "correct horse battery",
            "display_name": "Early",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    // The user process hands the event to the broker and marks it delivered.
    let db_url = deployment.db.url().to_owned();
    eventually("user.registered.v1 handed to the broker", || {
        let db_url = db_url.clone();
        async move {
            let mut conn = diesel_async::AsyncPgConnection::establish(&db_url)
                .await
                .ok()?;
            let left: Count = diesel::sql_query(
                "SELECT count(*) AS n FROM users.outbox WHERE delivered_at IS NULL",
            )
            .get_result(&mut conn)
            .await
            .ok()?;
            (left.n == 0).then_some(())
        }
    })
    .await;

    // Only now does the notification module start: the welcome email goes out.
    let notifications = Shop::start(&refs(&deployment.split_env(&[
        ("APP__MODULES__ENABLED", "notification"),
        ("APP__MODULES__USER__MODE", "remote"),
        ("APP__MODULES__USER__URL", user_url.as_str()),
    ])));
    notifications.wait_live().await;
    let mail = std::path::PathBuf::from(&deployment.mail);
    eventually("the welcome email", || {
        let mail = mail.clone();
        async move {
            std::fs::read_dir(&mail)
                .ok()?
                .flatten()
                .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
                .find(|text| text.contains("early@example.com") && text.contains("Welcome"))
        }
    })
    .await;
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Behind a trusted proxy (an Ingress, here the test), a gateway passes on
/// the client the proxy names, and a module process that trusts the gateway
/// counts each client on its own: one client's budget is not everyone's.
/// (Registrations, limited per minute: no refill while the test runs, on
/// however slow a machine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_passes_on_the_client_its_trusted_proxy_names() {
    let db = test_database().await;
    let namespace = format!("test-{}", uuid::Uuid::new_v4().simple());
    let broker = [
        ("APP__EVENTS__TRANSPORT", "rabbitmq"),
        ("APP__EVENTS__RABBITMQ__NAMESPACE", namespace.as_str()),
        ("APP__EVENTS__RABBITMQ__QUEUE_TTL_MS", "120000"),
    ];
    let user = Shop::start(
        &[
            &broker[..],
            &[
                ("APP__MODULES__ENABLED", "user"),
                ("APP__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1"),
                ("APP__RATE_LIMIT__REGISTRATIONS_PER_MINUTE_PER_IP", "1"),
                ("DATABASE_URL", db.url()),
            ],
        ]
        .concat(),
    );
    user.wait_live().await;
    let user_url = user.url("");
    let gateway = Shop::start(
        &[
            &broker[..],
            &[
                ("APP__MODULES__USER__MODE", "remote"),
                ("APP__MODULES__USER__URL", user_url.as_str()),
                ("APP__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.0/8"),
                ("DATABASE_URL", db.url()),
            ],
        ]
        .concat(),
    );
    gateway.wait_live().await;
    let http = crate::helpers::http();
    let register = |client: &'static str| {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let request = http
            .post(gateway.url("/api/v1/users"))
            .header("x-forwarded-for", client)
            .json(&serde_json::json!({
                "email": email, "password": "a long enough password", "display_name": "Client"
            }));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // One client spends its budget: the user module's own limit, for that
    // client, passed back.
    assert_eq!(register("203.0.113.1").await, 201);
    assert_eq!(register("203.0.113.1").await, 429);
    // The others have theirs.
    assert_eq!(register("203.0.113.2").await, 201);
    assert_eq!(register("203.0.113.3").await, 201);
}

/// A gateway sends a request again after a failed attempt only when that
/// is safe: a POST with an `Idempotency-Key` to a route that honours it,
/// never one to a route that ignores the key. And it asks whether the
/// processes behind it are ready, not merely alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_retries_only_safe_posts_and_asks_whether_modules_are_ready() {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web as aweb};
    use std::sync::{Arc, Mutex};

    // A module process that fails every call (502, which a retry may mend),
    // counting them; it serves the token keys so the gateway can start, and
    // is alive but not ready (its database down, say).
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let server = {
        let calls = Arc::clone(&calls);
        HttpServer::new(move || {
            let calls = Arc::clone(&calls);
            App::new()
                .route(
                    "/edge/health/live",
                    aweb::get().to(|| async {
                        HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
                    }),
                )
                .route(
                    "/edge/health/ready",
                    aweb::get().to(|| async {
                        HttpResponse::ServiceUnavailable()
                            .json(serde_json::json!({"status": "not_ready"}))
                    }),
                )
                .route(
                    "/edge/.well-known/jwks.json",
                    aweb::get()
                        .to(|| async { HttpResponse::Ok().json(serde_json::json!({"keys": []})) }),
                )
                .default_service(aweb::to(move |req: HttpRequest| {
                    let calls = Arc::clone(&calls);
                    async move {
                        calls
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", req.method(), req.path()));
                        HttpResponse::BadGateway().finish()
                    }
                }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap()
    };
    // Behind a path of its own, as behind a shared edge proxy.
    let failing = format!("http://127.0.0.1:{}/edge", server.addrs()[0].port());
    let server = server.run();
    let _server = server.handle();
    tokio::spawn(server);

    let gateway = Shop::start(&[
        ("APP__MODULES__ENABLED", ""),
        ("APP__MODULES__USER__MODE", "remote"),
        ("APP__MODULES__USER__URL", failing.as_str()),
        ("APP__MODULES__CATALOG__MODE", "remote"),
        ("APP__MODULES__CATALOG__URL", failing.as_str()),
        ("APP__MODULES__ORDER__MODE", "remote"),
        ("APP__MODULES__ORDER__URL", failing.as_str()),
        ("APP__SERVER__BODY_TIMEOUT_MS", "300"),
    ]);
    gateway.wait_live().await;
    let http = crate::helpers::http();
    let post = |path: &str| {
        http.post(gateway.url(path))
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&product_json("RETRY-1"))
            .send()
    };
    let count = |call: &str| calls.lock().unwrap().iter().filter(|c| *c == call).count();

    // The catalog ignores the key: sent once, whatever the failure.
    assert_eq!(post("/api/v1/products").await.unwrap().status(), 502);
    assert_eq!(
        count("POST /edge/api/v1/products"),
        1,
        "{:?}",
        calls.lock().unwrap()
    );
    // Checkout keeps the first answer per key: sent again (2 retries).
    assert_eq!(post("/api/v1/orders").await.unwrap().status(), 502);
    assert_eq!(
        count("POST /edge/api/v1/orders"),
        3,
        "{:?}",
        calls.lock().unwrap()
    );

    // Its modules' process is alive but cannot serve: the gateway is
    // degraded, not ready (still 200: one module's outage must not take
    // every instance out of rotation).
    let ready = http.get(gateway.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    // A path that would climb out of the module's URL (to the edge proxy's
    // other services) is refused here, and reaches no one.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let address = gateway.url("").trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(address.trim_end_matches('/'))
            .await
            .unwrap();
        stream
            .write_all(
                b"GET /api/v1/products/../../../../other HTTP/1.1\r\n\
                  Host: shop\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("invalid_path"), "{answer}");
        let calls = calls.lock().unwrap();
        assert!(!calls.iter().any(|c| c.contains("other")), "{calls:?}");
    }
    // A body that stops coming (not JSON: the gateway reads it to forward
    // it) is a 408 at its deadline, forwarded to no one, its connection
    // closed.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let address = gateway.url("").trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(address.trim_end_matches('/'))
            .await
            .unwrap();
        stream
            .write_all(
                b"POST /api/v1/products HTTP/1.1\r\nHost: shop\r\n\
                  Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\nthe first part",
            )
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            stream.read_to_string(&mut answer),
        )
        .await
        .expect("the gateway answers and closes")
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
        assert_eq!(count("POST /edge/api/v1/products"), 1);
    }

    // Asked for itself alone, it asks no one: ready.
    let own: Value = http
        .get(gateway.url("/health/ready?scope=process"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(own["status"], "ready", "{own}");
}

/// Headers a message's `Connection` header names belong to that hop alone
/// (RFC 9110 §7.6.1): the gateway passes neither the client's on to the
/// module nor the module's back to the client, and every end-to-end header
/// both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_drops_the_headers_a_connection_header_names_both_ways() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // A module process written by hand, to choose its answer's headers: it
    // echoes each request's head as its body, and names a header of its
    // own in `Connection`. It serves the token keys and readiness too.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let module = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0_u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let body = if head.contains("jwks") {
                    r#"{"keys":[]}"#.to_owned()
                } else if head.starts_with("GET /health") {
                    r#"{"status":"ready"}"#.to_owned()
                } else {
                    serde_json::json!({ "head": head }).to_string()
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     connection: close, x-module-hop\r\nx-module-hop: for the gateway\r\n\
                     x-module-end: for the client\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                drop(socket.write_all(answer.as_bytes()).await);
            });
        }
    });
    let gateway = Shop::start(&[
        ("APP__MODULES__ENABLED", ""),
        ("APP__MODULES__USER__MODE", "remote"),
        ("APP__MODULES__USER__URL", module.as_str()),
        ("APP__MODULES__CATALOG__MODE", "remote"),
        ("APP__MODULES__CATALOG__URL", module.as_str()),
    ]);
    gateway.wait_live().await;

    let address = gateway.url("").trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address.trim_end_matches('/'))
        .await
        .unwrap();
    stream
        .write_all(
            b"GET /api/v1/products HTTP/1.1\r\nHost: shop\r\n\
              Connection: close, X-Client-Hop\r\nx-client-hop: for the gateway\r\n\
              x-client-end: for the module\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-module-end: for the client"), "{head}");
    assert!(!head.contains("x-module-hop"), "{head}");
    // The module's echo of what reached it (chunked on its way back).
    let seen = body.to_ascii_lowercase();
    assert!(seen.contains("get /api/v1/products"), "{seen}");
    assert!(seen.contains("x-client-end: for the module"), "{seen}");
    assert!(!seen.contains("x-client-hop"), "{seen}");
}

/// A module process counts another process's calls as the shop's own, as
/// the monolith makes them in process, not as one client's: the order
/// process prices a cart at an extracted catalog whose per-client budget
/// (two requests, one more a second) its calls for the customers would
/// otherwise spend in a few lines, for every customer of that process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extracted_catalog_does_not_count_the_order_processs_calls_as_one_client() {
    use crate::checkout::shop::{place, stocked_product};
    use crate::journey::{live, start, url};

    let deployment = Deployment::new().await;
    let (main, other) = (free_port(), free_port());
    let (main_url, other_url) = (url(main), url(other));
    // Both processes believe 127.0.0.1's x-forwarded-for, so the test's own
    // requests (from 198.51.100.x, passed on by the gateway) have budgets of
    // their own at the catalog, apart from the order process's calls.
    let trusted = ("APP__RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1");
    let catalog = start(
        &deployment,
        other,
        true,
        &[
            ("APP__MODULES__ENABLED", "catalog"),
            ("APP__RATE_LIMIT__ENABLED", "true"),
            ("APP__RATE_LIMIT__PER_SECOND", crate::helpers::SLOW_RATE),
            ("APP__RATE_LIMIT__BURST", "2"),
            trusted,
        ],
        &[("user", main_url.as_str())],
    );
    let shop = start(
        &deployment,
        main,
        true,
        &[trusted],
        &[("catalog", other_url.as_str())],
    );
    let processes = [catalog, shop];
    live(&processes).await;
    // A client at `address`, as the proxy in front of both names it.
    let client_at = |address: String| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-forwarded-for", address.parse().unwrap());
        crate::helpers::http_builder()
            .default_headers(headers)
            .build()
            .unwrap()
    };
    let admin = mint_token(&deployment.settings, &[Role::Admin]);
    let customer = mint_token(&deployment.settings, &[Role::Customer]);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut items = Vec::new();
    for i in 0..4 {
        // Each from an address of its own: the admin's budget is not the point.
        let http = client_at(format!("198.51.100.{}", i + 1));
        let sku = format!("RL-{}-{i}", &run[..8]).to_uppercase();
        let id = stocked_product(&http, &main_url, &admin, &sku, 500, 10).await;
        items.push(serde_json::json!({"product_id": id, "quantity": 1}));
    }

    let http = client_at("198.51.100.7".to_owned());
    // Four lines: four calls from the order process to the catalog, twice
    // (the cart checked, then priced), beyond that budget at once.
    let filled = http
        .put(format!("{main_url}/api/v1/cart"))
        .bearer_auth(&customer)
        .json(&serde_json::json!({ "items": items }))
        .send()
        .await
        .unwrap();
    assert_eq!(filled.status(), 200, "{}", filled.text().await.unwrap());
    let placed = place(&http, &main_url, &customer, &run, "4242424242424242").await;
    let status = placed.status().as_u16();
    let body: Value = placed.json().await.unwrap();
    assert!(matches!(status, 201 | 202), "{status}: {body}");
    assert_eq!(body["lines"].as_array().map(Vec::len), Some(4), "{body}");

    // The catalog's limit still holds for a client: the customer's address
    // spends a budget of its own.
    let mut limited = false;
    for _ in 0..10 {
        let response = http
            .get(format!("{other_url}/api/v1/products?limit=1"))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the catalog's own limit no longer applies");
}

/// A module process that refuses the order process's service identity (a
/// service key out of step, as during a rotation) holds a checkout up; it
/// does not fail it. The step is asked again until the keys agree, then
/// the order is confirmed. (In the monolith the call is never refused.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_service_identity_holds_a_checkout_up_and_never_fails_it() {
    use crate::checkout::shop::{customer_token, fill_cart, get_json, place, stocked_product};
    use crate::journey::{live, start, url};

    let deployment = Deployment::new().await;
    let (main, other) = (free_port(), free_port());
    let (main_url, other_url) = (url(main), url(other));
    let other_key = crate::helpers::fresh_key_path();
    let inventory_with = |key: Option<&str>| {
        let mut extra = vec![("APP__MODULES__ENABLED", "inventory")];
        if let Some(key) = key {
            extra.push(("APP__AUTH__SERVICE_KEY_FILE", key));
        }
        start(
            &deployment,
            other,
            true,
            &extra,
            &[("user", main_url.as_str())],
        )
    };
    let inventory = inventory_with(Some(&other_key));
    let shop = start(
        &deployment,
        main,
        true,
        &[
            // Enough attempts for the inventory process's restart below,
            // whatever it takes on a loaded machine; that a refusal counts
            // none of them is read from the saga itself.
            ("APP__ORDER__MAX_STEP_ATTEMPTS", "1000"),
            ("APP__ORDER__RETRY_BASE_MS", "50"),
            ("APP__ORDER__RETRY_MAX_MS", "200"),
            ("APP__ORDER__RECOVERY_INTERVAL_MS", "100"),
            ("APP__ORDER__CHECKOUT_WAIT_MS", "500"),
        ],
        &[("inventory", other_url.as_str())],
    );
    live(std::slice::from_ref(&inventory)).await;
    live(std::slice::from_ref(&shop)).await;
    let http = crate::helpers::http();
    let admin = mint_token(&deployment.settings, &[Role::Admin]);
    let product = stocked_product(&http, &main_url, &admin, "KEYS-1", 700, 3).await;
    let customer = customer_token(&deployment.settings, uuid::Uuid::now_v7());
    fill_cart(&http, &main_url, &customer, &product, 1).await;
    let placed = place(&http, &main_url, &customer, "keys", "4242424242424242").await;
    assert_eq!(placed.status(), 202, "the reservation is refused for now");
    let id = placed.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Asked again and again, refused each time: still pending, not failed,
    // and no attempt counted (a refusal never gives the step up).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    {
        use diesel_async::{AsyncConnection as _, RunQueryDsl as _};
        #[derive(diesel::QueryableByName)]
        struct Saga {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            attempts: i32,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            last_error: Option<String>,
        }
        let mut db = diesel_async::AsyncPgConnection::establish(deployment.db.url())
            .await
            .unwrap();
        let saga: Saga = diesel::sql_query(
            "SELECT attempts, last_error FROM orders.sagas WHERE order_id = $1::uuid",
        )
        .bind::<diesel::sql_types::Text, _>(&id)
        .get_result(&mut db)
        .await
        .unwrap();
        assert_eq!(saga.attempts, 0, "refusals counted: {:?}", saga.last_error);
        assert!(
            saga.last_error
                .as_deref()
                .is_some_and(|e| e.contains("reserve")),
            "{:?}",
            saga.last_error
        );
    }
    let order: Value = get_json(&http, format!("{main_url}/api/v1/orders/{id}"), &customer).await;
    assert_eq!(order["status"], "pending", "{order}");

    // The inventory process restarted with the deployment's key: the
    // saga goes on and the order is confirmed.
    drop(inventory);
    let inventory = inventory_with(None);
    live(std::slice::from_ref(&inventory)).await;
    let order = eventually("the order confirmed", || async {
        let order: Value =
            get_json(&http, format!("{main_url}/api/v1/orders/{id}"), &customer).await;
        (order["status"] != "pending").then_some(order)
    })
    .await;
    assert_eq!(order["status"], "confirmed", "{order}");
}

/// A rotation of the service key, halfway through: the inventory process
/// signs with the next key and still accepts the last one, the other
/// process signs with the last and already accepts the next. No call is
/// refused and no event dead-lettered: the stock events the inventory
/// process seals with the next key reach the catalog of the other process,
/// and the order's calls signed with the last key reach the inventory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halfway_through_a_service_key_rotation_every_call_and_event_is_accepted() {
    use crate::checkout::shop::{customer_token, fill_cart, get_json, place, stocked_product};
    use crate::journey::{live, start, url};

    let deployment = Deployment::new().await;
    let (main, other) = (free_port(), free_port());
    let (main_url, other_url) = (url(main), url(other));
    let last = deployment
        .settings
        .auth
        .service_key_file
        .display()
        .to_string();
    let next = crate::helpers::fresh_key_path();
    std::fs::write(&next, auth::SigningKey::generate().1).unwrap();
    let inventory = start(
        &deployment,
        other,
        true,
        &[
            ("APP__MODULES__ENABLED", "inventory"),
            ("APP__AUTH__SERVICE_KEY_FILE", next.as_str()),
            ("APP__AUTH__ACCEPTED_SERVICE_KEY_FILES", last.as_str()),
        ],
        &[("user", main_url.as_str())],
    );
    let shop = start(
        &deployment,
        main,
        true,
        &[("APP__AUTH__ACCEPTED_SERVICE_KEY_FILES", next.as_str())],
        &[("inventory", other_url.as_str())],
    );
    live(std::slice::from_ref(&inventory)).await;
    live(std::slice::from_ref(&shop)).await;
    let http = crate::helpers::http();
    let admin = mint_token(&deployment.settings, &[Role::Admin]);
    let product = stocked_product(&http, &main_url, &admin, "ROTATE-1", 700, 1).await;
    let availability = |expected: &'static str| {
        let (http, url) = (
            http.clone(),
            format!("{main_url}/api/v1/products/{product}"),
        );
        async move {
            eventually(expected, || async {
                let p: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
                (p["availability"] == expected).then_some(())
            })
            .await;
        }
    };
    // The receipt's event, sealed with the next key, read by the catalog
    // here (one unit is under the default threshold).
    availability("low_stock").await;

    let customer = customer_token(&deployment.settings, uuid::Uuid::now_v7());
    fill_cart(&http, &main_url, &customer, &product, 1).await;
    let placed = place(&http, &main_url, &customer, "rotate", "4242424242424242").await;
    assert!(
        [201, 202].contains(&placed.status().as_u16()),
        "{}",
        placed.status()
    );
    let id = placed.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The reservation, made as `service` with the last key, accepted.
    let order = eventually("the order settled", || async {
        let order: Value =
            get_json(&http, format!("{main_url}/api/v1/orders/{id}"), &customer).await;
        (order["status"] != "pending").then_some(order)
    })
    .await;
    assert_eq!(order["status"], "confirmed", "{order}");
    // The sale's event, sealed with the next key, read here too.
    availability("out_of_stock").await;
}

/// A forwarded answer is read whole within the module's policy: a body
/// that stalls after its head meets the attempt timeout and the deadline
/// (504, not a client held until the HTTP client's own cap), and a body
/// cut off midway is the module's failure (retried when the request is
/// safe to send twice, then 502 `upstream_answer_broken`: a write may have
/// been applied), never a 200 whose body breaks off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reads_a_module_s_answer_within_its_deadline_and_never_passes_on_half_a_body() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // A module process written by hand: `/cut` sends half its body and
    // closes; any other path sends half and waits 30 s. It serves the token
    // keys and readiness too, and counts the calls to `/cut`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let module = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let cuts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&cuts);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0_u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let whole = |body: &str| {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                let half = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            connection: close\r\ncontent-length: 100\r\n\r\n{\"items\":[";
                if head.contains("jwks") {
                    drop(socket.write_all(whole(r#"{"keys":[]}"#).as_bytes()).await);
                } else if head.starts_with("GET /health") {
                    drop(
                        socket
                            .write_all(whole(r#"{"status":"ready"}"#).as_bytes())
                            .await,
                    );
                } else if head.contains("/cut ") {
                    counted.fetch_add(1, Ordering::SeqCst);
                    drop(socket.write_all(half.as_bytes()).await);
                } else if head.contains("/reset ") {
                    // Read, then closed without a word.
                    counted.fetch_add(100, Ordering::SeqCst);
                    drop(socket);
                } else {
                    drop(socket.write_all(half.as_bytes()).await);
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                }
            });
        }
    });
    let gateway = Shop::start(&[
        ("APP__MODULES__ENABLED", ""),
        ("APP__MODULES__USER__MODE", "remote"),
        ("APP__MODULES__USER__URL", module.as_str()),
        ("APP__MODULES__CATALOG__MODE", "remote"),
        ("APP__MODULES__CATALOG__URL", module.as_str()),
        ("APP__RESILIENCE__CATALOG__ATTEMPT_TIMEOUT_MS", "500"),
        ("APP__RESILIENCE__CATALOG__DEADLINE_MS", "1500"),
        ("APP__RESILIENCE__CATALOG__MAX_RETRIES", "1"),
        // Every leg fails on purpose: the breaker must not open midway.
        ("APP__RESILIENCE__CATALOG__BREAKER__WINDOW_SIZE", "100"),
        ("APP__RESILIENCE__CATALOG__BREAKER__MINIMUM_CALLS", "100"),
    ]);
    gateway.wait_live().await;
    let client = reqwest::Client::new();

    let started = std::time::Instant::now();
    let stalled = client
        .get(gateway.url("/api/v1/products/stall"))
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the deadline, not the body's 30 s: {:?}",
        started.elapsed()
    );
    assert_problem(stalled, 504, "upstream_timeout").await;

    let cut = client
        .get(gateway.url("/api/v1/products/cut"))
        .send()
        .await
        .unwrap();
    assert_problem(cut, 502, "upstream_answer_broken").await;
    assert_eq!(
        AtomicUsize::load(&cuts, Ordering::SeqCst),
        2,
        "a GET is tried again"
    );

    // A POST is not: the module may have done it, and the client is told so.
    let cut = client
        .post(gateway.url("/api/v1/products/cut"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(cut, 502, "upstream_answer_broken").await;
    assert_eq!(
        AtomicUsize::load(&cuts, Ordering::SeqCst),
        3,
        "a POST is not"
    );

    // Sent, then the connection closed with no answer: a POST, sent once,
    // may have been applied (502); a GET is safe to send again (503, the
    // module unavailable: the client may simply retry).
    let reset = client
        .post(gateway.url("/api/v1/products/reset"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(reset, 502, "upstream_answer_broken").await;
    assert_eq!(
        AtomicUsize::load(&cuts, Ordering::SeqCst),
        103,
        "the POST is sent once"
    );
    let reset = client
        .get(gateway.url("/api/v1/products/reset"))
        .send()
        .await
        .unwrap();
    assert_problem(reset, 503, "upstream_unavailable").await;

    // A HEAD's answer has no body to read: it goes back at once, with the
    // length the module gave (the GET's).
    let head = client
        .head(gateway.url("/api/v1/products/head"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "100");
}
