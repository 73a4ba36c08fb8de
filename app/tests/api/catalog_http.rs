//! The `/api/v1/products` routes as an HTTP client sees them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kernel::Role;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, create, product_json, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_returns_201_with_location_and_the_product() {
    let app = spawn_app().await;

    let response = app.post_product(&product_json("mug-1")).await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/products/{}", body["id"].as_str().unwrap())
    );
    assert_eq!(body["sku"], "MUG-1");
    assert_eq!(
        body["price"],
        json!({"amount_minor": 1299, "currency": "EUR"})
    );
    assert_eq!(body["active"], true);
    let fetched: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(fetched, body);
}

/// A description may hold a word of up to 2047 bytes (PostgreSQL's own
/// limit for a lexeme), such as a long URL: each word of a product is also
/// kept as a one-word search term (`product_terms`, ADR 0021), whose index
/// takes at most 2.7 kB an entry. A long URL full of apostrophes (doubled
/// in the term's text) and hard to compress passed that limit, and the
/// product's creation answered 500. Words too long for any one-word search
/// (more than 1,000 bytes) are no longer kept as terms; the product is
/// created and is found by its other words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_description_with_a_very_long_word_is_taken() {
    let app = spawn_app().await;
    // Pseudo-random URL characters, a given share of them apostrophes:
    // text that compresses badly, as the failures needed.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const URL_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~-";
    let mut skus = Vec::new();
    for (i, percent) in [30u64, 33, 35, 37].into_iter().cycle().take(16).enumerate() {
        let path: String = (0..2015)
            .map(|_| {
                if next() % 100 < percent {
                    '\''
                } else {
                    char::from(URL_CHARS[(next() % URL_CHARS.len() as u64) as usize])
                }
            })
            .collect();
        let sku = format!("LONG-WORD-{i}");
        let mut product = product_json(&sku);
        product["name"] = json!(format!("Longword teapot {i}"));
        product["description"] = json!(format!("see example.com/{path}"));
        let created = app.post_product(&product).await;
        assert_eq!(created.status(), 201, "{sku} ({percent} % apostrophes)");
        skus.push(sku);
    }
    // Found by a word of their names, through the one-word terms.
    let found: Value = app
        .get("/api/v1/products?q=longword&limit=100")
        .await
        .json()
        .await
        .unwrap();
    let mut listed: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sku"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    skus.sort_unstable();
    assert_eq!(listed, skus);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_sku_is_409() {
    let app = spawn_app().await;
    app.post_product(&product_json("dup")).await;
    let body = assert_problem(
        app.post_product(&product_json("DUP")).await,
        409,
        "duplicate_sku",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("DUP"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_fields_are_422_with_every_field_listed() {
    let app = spawn_app().await;
    let body =
        json!({"sku": "bad sku", "name": "", "price": {"amount_minor": -5, "currency": "EUR"}});
    let problem = assert_problem(app.post_product(&body).await, 422, "validation_failed").await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["sku", "name", "price.amount_minor"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_currency_and_float_amounts_are_rejected() {
    let app = spawn_app().await;
    for price in [
        json!({"amount_minor": 100, "currency": "XYZ"}),
        json!({"amount_minor": 12.99, "currency": "EUR"}),
    ] {
        let body = json!({"sku": "A1", "name": "n", "price": price});
        assert_problem(app.post_product(&body).await, 422, "invalid_body").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_opaque_cursor_until_null() {
    let app = spawn_app().await;
    for i in 0..3 {
        assert_eq!(
            app.post_product(&product_json(&format!("L{i}")))
                .await
                .status(),
            201
        );
    }
    let first: Value = app
        .get("/api/v1/products?limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .get(&format!("/api/v1/products?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["items"][0]["sku"], "L2");
    assert_eq!(second["next_cursor"], Value::Null);
}

/// A cursor goes on with the list it came from: the same order and the
/// same filters. Carried to other filters it would start that list at a
/// place of another one's (skipping or repeating products), so it is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_is_refused_with_other_filters() {
    let app = spawn_app().await;
    for i in 0..3 {
        let created = app.post_product(&product_json(&format!("F{i}"))).await;
        assert_eq!(created.status(), 201);
    }
    let first: Value = app
        .get("/api/v1/products?limit=1&max_price=5000")
        .await
        .json()
        .await
        .unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let same = app
        .get(&format!(
            "/api/v1/products?limit=1&max_price=5000&cursor={cursor}"
        ))
        .await;
    assert_eq!(same.status(), 200);
    for other in [
        "max_price=6000",
        "min_price=1",
        "q=product",
        "active=true",
        "",
    ] {
        let moved = app
            .get(&format!("/api/v1/products?limit=1&{other}&cursor={cursor}"))
            .await;
        assert_problem(moved, 400, "invalid_cursor").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_limit_is_bounded_and_checked() {
    let app = spawn_app().await;
    assert_problem(
        app.get("/api/v1/products?limit=0").await,
        422,
        "validation_failed",
    )
    .await;
    // Every whole number out of range alike, however far.
    for limit in [
        "101",
        "-1",
        "4294967296",
        "9223372036854775808",
        "-99999999999999999999",
    ] {
        assert_problem(
            app.get(&format!("/api/v1/products?limit={limit}")).await,
            422,
            "validation_failed",
        )
        .await;
    }
    assert_problem(
        app.get("/api/v1/products?limit=abc").await,
        400,
        "invalid_query_parameter",
    )
    .await;
    assert_problem(
        app.get("/api/v1/products?cursor=zzz").await,
        400,
        "invalid_cursor",
    )
    .await;
    // Well-formed but forged: a NUL in the sort value, which PostgreSQL
    // refuses in text (it was a failed query, a 500).
    for sort in ["name", "relevance&q=mug", "newest"] {
        let key = r#"{"sort":"SORT","id":"01900000-0000-7000-8000-000000000000","value":"\u0000"}"#
            .replace("SORT", sort.split('&').next().unwrap_or(sort));
        let cursor = URL_SAFE_NO_PAD.encode(key);
        assert_problem(
            app.get(&format!("/api/v1/products?sort={sort}&cursor={cursor}"))
                .await,
            400,
            "invalid_cursor",
        )
        .await;
    }
    // A year PostgreSQL's timestamps do not hold (chrono's reach further).
    for year in ["-5000", "+300000"] {
        let key = format!(
            r#"{{"sort":"newest","id":"01900000-0000-7000-8000-000000000000","value":"{year}-01-01T00:00:00Z"}}"#
        );
        let cursor = URL_SAFE_NO_PAD.encode(key);
        assert_problem(
            app.get(&format!("/api/v1/products?sort=newest&cursor={cursor}"))
                .await,
            400,
            "invalid_cursor",
        )
        .await;
    }
    assert_eq!(app.get("/api/v1/products?limit=100").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_accepts_merge_patch_and_rejects_sku_changes() {
    let app = spawn_app().await;
    let (url, created) = create(&app, "P1").await;

    let admin = app.token(&[Role::Admin]);
    let response = app
        .client
        .patch(&url)
        .bearer_auth(&admin)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"active": false, "name": "Renamed"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["active"], false);
    assert_eq!(updated["name"], "Renamed");
    assert_eq!(updated["price"], created["price"]);

    let response = app
        .client
        .patch(&url)
        .bearer_auth(&admin)
        .json(&json!({"sku": "OTHER"}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 422, "invalid_body").await;
    assert!(problem["detail"].as_str().unwrap().contains("sku"));
}

/// A merge patch's `null` removes what can be removed (the images, the
/// attributes; it was ignored), and leaves what cannot (the name, the
/// price, the sale status) as it is, as the spec says (v1 took `null`
/// there from the start, so it stays accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_null_empties_lists_and_leaves_fields_that_cannot_be_removed() {
    let app = spawn_app().await;
    let (url, _) = create(&app, "NULLS-1").await;
    let admin = app.token(&[Role::Admin]);
    let patch = |body: Value| {
        app.client
            .patch(&url)
            .bearer_auth(&admin)
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
    };
    let filled = patch(json!({
        "images": ["https://images.example.com/a.jpg"],
        "attributes": {"colour": "blue"}
    }))
    .await
    .unwrap();
    assert_eq!(filled.status(), 200);
    let cleared = patch(json!({"images": null, "attributes": null}))
        .await
        .unwrap();
    assert_eq!(cleared.status(), 200);
    let cleared: Value = cleared.json().await.unwrap();
    assert_eq!(cleared["images"], json!([]), "{cleared}");
    assert_eq!(cleared["attributes"], json!({}), "{cleared}");
    for field in ["name", "price", "active"] {
        let response = patch(json!({ field: null })).await.unwrap();
        assert_eq!(response.status(), 200, "{field}");
        let unchanged: Value = app
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(!unchanged[field].is_null(), "{field}: {unchanged}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_product_is_404_problem() {
    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7();
    let problem = assert_problem(
        app.get(&format!("/api/v1/products/{id}")).await,
        404,
        "product_not_found",
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&id.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_writes_are_for_admins() {
    let app = spawn_app().await;
    let anonymous = app
        .client
        .post(app.url("/api/v1/products"))
        .json(&product_json("W1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        r#"Bearer realm="shop""#
    );
    assert_problem(anonymous, 401, "unauthenticated").await;

    let customer = app
        .client
        .post(app.url("/api/v1/products"))
        .bearer_auth(app.token(&[Role::Customer]))
        .json(&product_json("W1"))
        .send()
        .await
        .unwrap();
    assert_problem(customer, 403, "forbidden").await;

    assert_eq!(app.post_product(&product_json("W1")).await.status(), 201);
    // Reads stay public.
    assert_eq!(app.get("/api/v1/products").await.status(), 200);
}

/// Two admins edit one product from the same read: with `If-Match` (the
/// `ETag` of their GET), the second change is refused 412 instead of
/// silently undoing the first; a change is made on the version it names,
/// `*` names any, a weak tag none, and no `If-Match` changes regardless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_with_if_match_is_refused_when_the_product_changed_since() {
    let app = spawn_app().await;
    let (url, _) = create(&app, "IFMATCH-1").await;
    let admin = app.token(&[Role::Admin]);
    let read = app.client.get(&url).send().await.unwrap();
    let etag = read.headers()["etag"].to_str().unwrap().to_owned();
    let patch = |body: Value, if_match: Option<&str>| {
        let mut request = app
            .client
            .patch(&url)
            .bearer_auth(&admin)
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string());
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        request.send()
    };

    let first = patch(json!({"name": "First admin's name"}), Some(&etag))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    // The answer names the version it made, as a GET of it does: the next
    // change needs no read.
    let made = first.headers()["etag"].to_str().unwrap().to_owned();
    let read_now = app.client.get(&url).send().await.unwrap();
    assert_eq!(read_now.headers()["etag"].to_str().unwrap(), made);
    let second = patch(
        json!({"price": {"amount_minor": 1, "currency": "EUR"}}),
        Some(&etag),
    )
    .await
    .unwrap();
    let body = assert_problem(second, 412, "precondition_failed").await;
    assert!(body["detail"].is_string(), "{body}");
    let now: Value = app
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now["name"], "First admin's name", "{now}");
    assert_ne!(
        now["price"]["amount_minor"], 1,
        "the refused change left nothing: {now}"
    );

    // The version read now is the one to name; the answer's own ETag is it.
    let fresh = app.client.get(&url).send().await.unwrap();
    let fresh_tag = fresh.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(fresh_tag, etag);
    assert_eq!(
        patch(
            json!({"active": false}),
            Some(&format!("\"other\", {fresh_tag}"))
        )
        .await
        .unwrap()
        .status(),
        200
    );
    assert_eq!(
        patch(json!({"active": true}), Some("*"))
            .await
            .unwrap()
            .status(),
        200
    );
    let current = app.client.get(&url).send().await.unwrap();
    let current_tag = current.headers()["etag"].to_str().unwrap().to_owned();
    let weak = patch(json!({"active": false}), Some(&format!("W/{current_tag}")))
        .await
        .unwrap();
    assert_problem(weak, 412, "precondition_failed").await;
    assert_eq!(
        patch(json!({"active": false}), None)
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A change publishes its events even when the product as it was does not
/// read as one: a currency the table's CHECK takes and the kernel does not
/// know (`HRK`, retired in 2023), loaded by SQL. Its correction committed
/// with no event at all, so no other module or instance heard of it. Now
/// it announces `ProductUpdated` (no `ProductPriceChanged`: there is no old
/// price to compare); a change leaving the row unreadable is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correcting_a_product_stored_with_an_unknown_currency_publishes_its_update() {
    use diesel_async::RunQueryDsl as _;

    let app = spawn_app().await;
    let id = uuid::Uuid::now_v7();
    diesel::sql_query(format!(
        "INSERT INTO catalog.products (id, sku, name, price_amount_minor, price_currency) \
         VALUES ('{id}', 'KUNA-1', 'Kuna kettle', 7500, 'HRK')"
    ))
    .execute(&mut app.db().await)
    .await
    .unwrap();
    let url = app.url(&format!("/api/v1/products/{id}"));
    let admin = app.token(&[Role::Admin]);
    let patch = |body: Value| {
        app.client
            .patch(&url)
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    let events = |event_type: &str| {
        format!(
            "SELECT count(*) AS n FROM catalog.outbox \
             WHERE aggregate_id = '{id}' AND event_type = '{event_type}'"
        )
    };

    // A change after which the row still does not read: nothing is kept.
    let renamed = patch(json!({"name": "Renamed kettle"})).await.unwrap();
    assert_problem(renamed, 500, "internal_error").await;
    let kept = format!(
        "SELECT count(*) AS n FROM catalog.products \
         WHERE id = '{id}' AND name = 'Kuna kettle' AND price_currency = 'HRK'"
    );
    assert_eq!(crate::helpers::count(&app, &kept).await, 1);

    let corrected = patch(json!({"price": {"amount_minor": 1000, "currency": "EUR"}}))
        .await
        .unwrap();
    assert_eq!(corrected.status(), 200);
    let body: Value = corrected.json().await.unwrap();
    assert_eq!(
        body["price"],
        json!({"amount_minor": 1000, "currency": "EUR"})
    );
    assert_eq!(
        crate::helpers::count(&app, &events("catalog.product_updated.v1")).await,
        1
    );
    assert_eq!(
        crate::helpers::count(&app, &events("catalog.product_price_changed.v1")).await,
        0
    );
    let now: Value = app
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now["price"], body["price"]);
    assert_eq!(now["name"], "Kuna kettle");
}
