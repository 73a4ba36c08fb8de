//! Every kind of bad request gets an RFC 9457 problem, and every response a request id.

use kernel::Role;

use crate::helpers::{assert_problem, spawn_app, spawn_app_with, subscribe_webhook};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/products"))
        .bearer_auth(app.token(&[Role::Admin]))
        .header("content-type", "application/json")
        .body("{\"sku\": ")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "malformed_body").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_415() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/v1/products"))
        .bearer_auth(app.token(&[Role::Admin]))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_problem(response, 415, "unsupported_media_type").await;
}

/// PostgreSQL cannot store a NUL character: one in a body or a query is a
/// 422 naming the field, never a 500 from the database. A backslash that
/// only looks like the escape is ordinary text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_422_naming_the_field() {
    let app = spawn_app().await;
    let admin = app.token(&[Role::Admin]);
    let response = app
        .client
        .post(app.url("/api/v1/categories"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(r#"{"name": "Mugs\u0000", "slug": "mugs"}"#)
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "name", "{body}");
    let product = serde_json::json!({"sku": "NUL-1", "name": "A\\u0000 mug",
        "price": {"amount_minor": 100, "currency": "EUR"}});
    let created = app.post_product(&product).await;
    assert_eq!(created.status(), 201, "an escaped backslash is text");
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["name"], "A\\u0000 mug");
    let search = app.get("/api/v1/products?q=mug%00").await;
    let body = assert_problem(search, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "query.q", "{body}");
}

/// A body built to make the NUL refusal name many long paths (objects
/// nested with long keys, then many NUL strings), sent by anyone to the
/// sign-in, is answered with at most 20 fields of at most 200 bytes each:
/// the answer no longer grows with the body's nesting times its NULs (a
/// body of 256 KiB could make gigabytes of paths).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_refusal_names_at_most_twenty_short_fields() {
    let app = spawn_app().await;
    let key = "k".repeat(100);
    let mut body = String::new();
    for _ in 0..20 {
        body.push_str(&format!("{{\"{key}\": "));
    }
    body.push('[');
    body.push_str(&vec![r#""\u0000""#; 500].join(","));
    body.push(']');
    body.push_str(&"}".repeat(20));
    let response = app
        .client
        .post(app.url("/api/v1/auth/token"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 422, "validation_failed").await;
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 20, "{}", errors.len());
    for error in errors {
        let field = error["field"].as_str().unwrap();
        assert!(field.len() <= 203, "{}", field.len());
        assert!(field.starts_with("kkk") && field.ends_with('…'), "{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413() {
    let app = spawn_app_with(&[("APP__SERVER__BODY_LIMIT_BYTES", "1024")]).await;
    let big = serde_json::json!({"sku": "A", "name": "x".repeat(4096), "price": {"amount_minor": 1, "currency": "EUR"}});
    let response = app.post_product(&big).await;
    assert_problem(response, 413, "payload_too_large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_path_parameter_is_400() {
    let app = spawn_app().await;
    assert_problem(
        app.get("/api/v1/products/not-a-uuid").await,
        400,
        "invalid_path_parameter",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_and_wrong_method_are_problems() {
    let app = spawn_app().await;
    assert_problem(
        app.get("/api/v1/nothing-here").await,
        404,
        "route_not_found",
    )
    .await;
    assert_problem(app.get("/").await, 404, "route_not_found").await;
    // A documented path with a method it does not answer: 405 with Allow.
    for (method, path, allow) in [
        (reqwest::Method::DELETE, "/api/v1/products", "GET, POST"),
        (
            reqwest::Method::PUT,
            "/api/v1/orders/018f0000-0000-7000-8000-000000000000",
            "GET",
        ),
        (reqwest::Method::GET, "/api/v1/auth/token", "POST"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        let headers = response.headers().clone();
        assert_problem(response, 405, "method_not_allowed").await;
        assert_eq!(headers["allow"], allow, "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_echoed_or_generated() {
    let app = spawn_app().await;
    let echoed = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "client-chosen-42");

    let generated = app.get("/health/live").await;
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    // An unsafe id (too long) is replaced, not echoed.
    let replaced = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "x".repeat(200))
        .send()
        .await
        .unwrap();
    assert_ne!(replaced.headers()["x-request-id"], "x".repeat(200).as_str());

    // Problems carry it in the body too.
    let problem = app
        .client
        .get(app.url("/api/v1/nothing"))
        .header("x-request-id", "trace-me")
        .send()
        .await
        .unwrap();
    let body = assert_problem(problem, 404, "route_not_found").await;
    assert_eq!(body["request_id"], "trace-me");
}

/// OpenAPI matches a concrete path before a templated one: a method a
/// concrete path does not document is 405, not an operation of the
/// template (`GET /inventory/reservations` is not the stock of a SKU
/// `RESERVATIONS`, nor `GET /payments/methods` a payment id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concrete_path_is_not_taken_by_a_template() {
    let app = spawn_app().await;
    let admin = app.token(&[Role::Admin]);
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/inventory/reservations"),
        (reqwest::Method::PUT, "/api/v1/inventory/reservations"),
        (reqwest::Method::GET, "/api/v1/payments/methods"),
        (reqwest::Method::DELETE, "/api/v1/payments/authorizations"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        let headers = response.headers().clone();
        assert_problem(response, 405, "method_not_allowed").await;
        assert_eq!(headers["allow"], "POST", "{method} {path}");
    }
}

/// Every request body is a JSON object, and so is every object in it:
/// serde alone would build a struct from an array.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_the_objects_in_them_are_objects() {
    let app = spawn_app().await;
    let admin = app.token(&[Role::Admin]);
    let created: serde_json::Value = app
        .post_product(&serde_json::json!({"sku": "OBJ-1", "name": "Mug",
            "price": {"amount_minor": 100, "currency": "EUR"}}))
        .await
        .json()
        .await
        .unwrap();
    let product = format!("/api/v1/products/{}", created["id"].as_str().unwrap());
    for (method, path, body) in [
        (reqwest::Method::PATCH, product.as_str(), "[null, null]"),
        (
            reqwest::Method::POST,
            "/api/v1/products",
            r#"["OBJ-2", "Mug"]"#,
        ),
        (reqwest::Method::POST, "/api/v1/products", "12"),
        (
            reqwest::Method::POST,
            "/api/v1/products",
            r#"{"sku": "OBJ-3", "name": "Mug", "price": [100, "EUR"]}"#,
        ),
        (
            reqwest::Method::PATCH,
            product.as_str(),
            r#"{"price": [100, "EUR"]}"#,
        ),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_problem(response, 422, "invalid_body").await;
    }
    let unchanged: serde_json::Value = app.get(&product).await.json().await.unwrap();
    assert_eq!(unchanged["name"], "Mug");

    // A JSON body where an operation reads none: left unread on the
    // methods that carry none (a GET answers as without it), looked at on
    // a POST that reads none, as its documented 422 says.
    let read = app
        .client
        .get(app.url(&product))
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let cancel = app
        .client
        .post(app.url(&format!("/api/v1/orders/{}/cancel", uuid::Uuid::now_v7())))
        .bearer_auth(app.token(&[Role::Customer]))
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_problem(cancel, 422, "invalid_body").await;
}

/// An integer may be written as JSON allows (`1299.0` is the integer 1299,
/// as JSON Schema says); a fraction is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_may_be_written_with_a_zero_fraction() {
    let app = spawn_app().await;
    let created = app
        .post_product(&serde_json::json!({"sku": "INT-1", "name": "Mug",
            "price": {"amount_minor": 1299.0, "currency": "EUR"}}))
        .await;
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["price"]["amount_minor"], 1299);
    let fraction = app
        .post_product(&serde_json::json!({"sku": "INT-2", "name": "Mug",
            "price": {"amount_minor": 1299.5, "currency": "EUR"}}))
        .await;
    assert_problem(fraction, 422, "invalid_body").await;
}

/// Attributes are kept as jsonb; every number comes back as it was sent,
/// even next to the largest double (once a 500: it did not parse back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_numbers_come_back_as_sent() {
    let app = spawn_app().await;
    let attributes = serde_json::json!({"a": 1.7976931348623155e308, "b": 1.79e308, "c": -3.4e29});
    let created = app
        .post_product(&serde_json::json!({"sku": "NUM-1", "name": "Mug",
            "price": {"amount_minor": 1, "currency": "EUR"}, "attributes": attributes}))
        .await;
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["attributes"], attributes);
}

/// A webhook URL is kept as parsed: an upper-case scheme was stored as
/// sent and broke the table's CHECK (a 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_url_is_kept_as_parsed() {
    let app = spawn_app().await;
    let admin = app.token(&[Role::Admin]);
    let response = subscribe_webhook(&app, admin, "HTTPS://Hooks.Example.com/Shop").await;
    assert_eq!(response.status(), 201);
    let created: serde_json::Value = response.json().await.unwrap();
    assert_eq!(created["url"], "https://hooks.example.com/Shop");
}

/// The server refuses exactly what the schema's URL and email patterns
/// refuse (`kernel::patterns`): the fuzzer found a URL the pattern forbids
/// (`*` in the host) that the server took, and a public IP literal or an
/// address with surrounding spaces were taken too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_and_emails_outside_the_schema_patterns_are_refused() {
    let app = spawn_app().await;
    let admin = app.token(&[Role::Admin]);
    for url in [
        "HTTP://0.AA*",
        "http://93.184.216.34/hook",
        "http://a@hooks.example.com/",
    ] {
        let response = subscribe_webhook(&app, &admin, url).await;
        let body = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "url", "{url}: {body}");
    }
    for email in [" ada@example.com", "ädä@example.com", "ada@exämple.com"] {
        let response = app
            .client
            .post(app.url("/api/v1/users"))
            .json(
                &serde_json::json!({"email": email, "password": "plum kettle orbit 42",
                "display_name": "Ada"}),
            )
            .send()
            .await
            .unwrap();
        let body = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "email", "{email}: {body}");
    }
}

/// A body that stops coming is answered 408 at its deadline and its
/// connection closed, not held open with the part read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_coming_is_408_and_its_connection_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = spawn_app_with(&[("APP__SERVER__BODY_TIMEOUT_MS", "300")]).await;
    let address = app.url("").trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address.as_str())
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /api/v1/auth/token HTTP/1.1\r\nHost: shop\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"email\": \"a",
        )
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_string(&mut answer),
    )
    .await
    .expect("answered and closed")
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");

    // A body that arrives in time is read as ever.
    let response = reqwest::Client::new()
        .post(app.url("/api/v1/auth/token"))
        .json(&serde_json::json!({"email": "nobody@example.com", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}
