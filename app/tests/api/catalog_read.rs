//! Reading the catalog: conditional GETs, the product cache (in memory and
//! in Redis), and the search index. The availability read model: `catalog_availability`.

use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use kernel::Role;
use serde_json::{Value, json};

use crate::helpers::{TestApp, create, send_json, spawn_app, spawn_app_with};

async fn patch(app: &TestApp, url: &str, body: Value) {
    let response = app
        .client
        .patch(url)
        .bearer_auth(app.token(&[Role::Admin]))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A conditional `GET url`: `If-None-Match: etag`.
async fn get_if_none_match(app: &TestApp, url: &str, etag: &str) -> reqwest::Response {
    app.client
        .get(url)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap()
}

fn metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_get_is_304_until_the_product_changes() {
    let app = spawn_app().await;
    let (url, _) = create(&app, "ETAG-1").await;

    let first = app.client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["cache-control"], "public, max-age=30");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();

    let again = get_if_none_match(&app, &url, &etag).await;
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());

    patch(&app, &url, json!({"name": "Changed"})).await;
    let changed = get_if_none_match(&app, &url, &etag).await;
    assert_eq!(changed.status(), 200, "a change makes a new version");
    assert_ne!(changed.headers()["etag"], etag.as_str());

    // Lists are tagged too; other routes get no-cache.
    let list = app.get("/api/v1/products").await;
    let list_etag = list.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(list.headers()["cache-control"], "public, max-age=5");
    let list_again = get_if_none_match(&app, &app.url("/api/v1/products"), &list_etag).await;
    assert_eq!(list_again.status(), 304);
    assert_eq!(
        app.get("/health/live").await.headers()["cache-control"],
        "no-cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_serves_reads_and_a_patch_is_visible_at_once() {
    let app = spawn_app().await;
    let (url, _) = create(&app, "CACHE-1").await;
    let hits = || async {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        metric(
            &metrics,
            r#"cache_requests_total{cache="product",result="hit"}"#,
        )
    };
    app.get(&url[app.address.len()..]).await;
    let before = hits().await;
    for _ in 0..3 {
        app.get(&url[app.address.len()..]).await;
    }
    assert_eq!(hits().await - before, 3.0, "three reads, three hits");

    patch(
        &app,
        &url,
        json!({"price": {"amount_minor": 777, "currency": "EUR"}}),
    )
    .await;
    let fresh: Value = app
        .get(&url[app.address.len()..])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        fresh["price"]["amount_minor"], 777,
        "no stale read after a write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_cache_is_shared_and_invalidated() {
    let app = spawn_app_with(&[("APP__CATALOG__CACHE__BACKEND", "redis")]).await;
    let (url, product) = create(&app, "REDIS-1").await;
    let key = format!("shop:catalog:product:{}", product["id"].as_str().unwrap());
    let client = redis::Client::open(
        app.settings
            .section::<catalog::Settings>()
            .unwrap()
            .cache
            .redis_url
            .as_str(),
    )
    .unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let cached = || {
        let mut redis = redis.clone();
        let key = key.clone();
        async move {
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut redis)
                .await
                .unwrap()
        }
    };

    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 200);
    let stored: Value =
        serde_json::from_str(&cached().await.expect("the product is in Redis")).unwrap();
    assert_eq!(stored["sku"], "REDIS-1");

    patch(&app, &url, json!({"name": "Renamed in Redis"})).await;
    assert_eq!(cached().await, None, "the write deleted the shared entry");
    let fresh: Value = send_json(app.client.get(&url)).await;
    assert_eq!(fresh["name"], "Renamed in Redis");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_uses_the_full_text_index() {
    let app = spawn_app().await;
    let mut conn = app.db().await;
    diesel::sql_query(
        "INSERT INTO catalog.products (id, sku, name, description, price_amount_minor, price_currency) \
         SELECT gen_random_uuid(), 'BULK-' || i, \
                (ARRAY['Blue', 'Red', 'Green', 'Tall', 'Small'])[1 + i % 5] || ' ' || \
                (ARRAY['mug', 'plate', 'bowl', 'glass', 'teapot', 'spoon', 'fork', 'knife'])[1 + i % 8] || ' ' || i, \
                'Item number ' || i || CASE WHEN i % 500 = 0 THEN ' limited edition' ELSE '' END, \
                100 + i % 5000, 'EUR' \
         FROM generate_series(1, 20000) AS i",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query("VACUUM ANALYZE catalog.products")
        .execute(&mut conn)
        .await
        .unwrap();

    #[derive(diesel::QueryableByName)]
    struct Plan {
        #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
        line: String,
    }
    // The shape of the catalog's search query (repo::list with q), for a
    // selective term (40 rows in 20,000), as real searches are.
    let plan: Vec<Plan> = diesel::sql_query(
        "EXPLAIN SELECT id, ts_rank(search, websearch_to_tsquery('english', 'limited')) AS rank \
         FROM catalog.products WHERE search @@ websearch_to_tsquery('english', 'limited') \
         ORDER BY rank DESC, id DESC LIMIT 21",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let plan: Vec<String> = plan.into_iter().map(|p| p.line).collect();
    assert!(
        plan.iter().any(|l| l.contains("products_search_idx")),
        "the search does not use the GIN index:\n{}",
        plan.join("\n")
    );

    let found: Value = app
        .get("/api/v1/products?q=limited&limit=5")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"].as_array().unwrap().len(), 5);
    assert!(
        found["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["description"].as_str().unwrap().contains("limited"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_one_product_load_it_once() {
    let app = spawn_app().await;
    let (url, _) = create(&app, "STAMPEDE-1").await;
    let loads = || async {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        metric(&metrics, r#"cache_loads_total{cache="product"}"#)
    };
    let before = loads().await;
    let reads: Vec<_> = (0..50)
        .map(|_| {
            let request = app.client.get(&url);
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    for read in reads {
        assert_eq!(read.await.unwrap(), 200);
    }
    assert_eq!(
        loads().await - before,
        1.0,
        "fifty concurrent reads of a cold product, one database load"
    );
}
