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
    assert_eq!(first.headers()["content-type"], "application/json");
    let body = first.bytes().await.unwrap();
    // The cached representation's tag is the one the middleware makes of
    // any other body, and a hit sends the same bytes as the load did.
    assert_eq!(web::etag::tag_of(&body), etag.as_str());
    let hit = app.client.get(&url).send().await.unwrap();
    assert_eq!(hit.headers()["etag"], etag.as_str());
    assert_eq!(hit.bytes().await.unwrap(), body);

    let again = get_if_none_match(&app, &url, &etag).await;
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert_eq!(again.headers()["cache-control"], "public, max-age=30");
    assert!(again.bytes().await.unwrap().is_empty());
    let listed = get_if_none_match(&app, &url, &format!("\"0\", W/{etag}")).await;
    assert_eq!(listed.status(), 304, "a weak tag in a list matches");
    assert_eq!(get_if_none_match(&app, &url, "*").await.status(), 304);
    assert_eq!(get_if_none_match(&app, &url, "\"0\"").await.status(), 200);

    patch(&app, &url, json!({"name": "Changed"})).await;
    let changed = get_if_none_match(&app, &url, &etag).await;
    assert_eq!(changed.status(), 200, "a change makes a new version");
    assert_ne!(changed.headers()["etag"], etag.as_str());

    // Lists are tagged too; other routes get no-cache.
    let list = app.get("/api/v1/products").await;
    let list_etag = list.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(list.headers()["cache-control"], "public, max-age=5");
    // The spec says so (its default for a GET is `no-cache`).
    let spec: Value = app
        .get("/api-docs/openapi.json")
        .await
        .json()
        .await
        .unwrap();
    for (path, sent) in [
        ("/api/v1/products/{id}", "public, max-age=30"),
        ("/api/v1/products", "public, max-age=5"),
        ("/api/v1/categories", "public, max-age=60"),
    ] {
        let said = &spec["paths"][path]["get"]["responses"]["200"]["headers"]["cache-control"]["description"];
        assert!(
            said.as_str().unwrap().starts_with(&format!("`{sent}`")),
            "{path}: {said}"
        );
    }
    let categories = app.get("/api/v1/categories").await;
    assert_eq!(categories.headers()["cache-control"], "public, max-age=60");
    let list_again = get_if_none_match(&app, &app.url("/api/v1/products"), &list_etag).await;
    assert_eq!(list_again.status(), 304);
    // The liveness answer is tagged once, as the middleware would tag it.
    let live = app.get("/health/live").await;
    assert_eq!(live.headers()["cache-control"], "no-cache");
    assert_eq!(live.headers()["content-type"], "application/json");
    let live_etag = live.headers()["etag"].to_str().unwrap().to_owned();
    let live_body = live.bytes().await.unwrap();
    assert_eq!(live_etag, web::etag::tag_of(&live_body).to_str().unwrap());
    assert_eq!(
        serde_json::from_slice::<Value>(&live_body).unwrap(),
        json!({"status": "ok"})
    );
    let live_again = get_if_none_match(&app, &app.url("/health/live"), &live_etag).await;
    assert_eq!(live_again.status(), 304);
    assert_eq!(live_again.headers()["cache-control"], "no-cache");
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

/// A Redis that stops answering (its connection open, nothing coming
/// back) costs a read its `redis_timeout_ms` and no more: the product comes
/// from the database. And the catalog's event handlers, which delete a
/// changed product from Redis inside their transaction, go on: a stock
/// change still reaches the product's availability.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_holds_up_neither_reads_nor_events() {
    let settings = crate::helpers::test_settings(None, &[]);
    let catalog = settings.section::<catalog::Settings>().unwrap();
    let redis = url::Url::parse(&catalog.cache.redis_url).unwrap();
    let proxy = testkit::fault::FaultProxy::start(redis.port().unwrap_or(6379)).await;
    let through_proxy = format!("redis://127.0.0.1:{}", proxy.port());
    let app = spawn_app_with(&[
        ("APP__CATALOG__CACHE__BACKEND", "redis"),
        ("APP__CATALOG__CACHE__REDIS_URL", through_proxy.as_str()),
    ])
    .await;
    let (url, _) = create(&app, "STALLED-REDIS-1").await;
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 200);

    proxy.stall(true);
    let (other, _) = create(&app, "STALLED-REDIS-2").await;
    let read = app
        .client
        .get(&other)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .expect("a read answers while Redis is silent");
    assert_eq!(read.status(), 200);

    let response = app
        .client
        .post(app.url("/api/v1/inventory/STALLED-REDIS-1/adjustments"))
        .bearer_auth(app.token(&[Role::Admin]))
        .json(&json!({"quantity": 10, "reason": "receive"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    crate::helpers::eventually("the stock change reached the catalog", || async {
        let product: Value = app
            .client
            .get(&url)
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (product["availability"] == "in_stock").then_some(())
    })
    .await;
    proxy.stall(false);
}

/// A Redis down when the shop starts (a deploy racing it) does not stop
/// the start: products are read from the database, and once Redis
/// answers the cache shares its entries there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_down_at_start_stops_nothing_and_is_used_once_it_answers() {
    let settings = crate::helpers::test_settings(None, &[]);
    let catalog = settings.section::<catalog::Settings>().unwrap();
    let redis = url::Url::parse(&catalog.cache.redis_url).unwrap();
    let proxy = testkit::fault::FaultProxy::start(redis.port().unwrap_or(6379)).await;
    proxy.stop_listening();
    let through_proxy = format!("redis://127.0.0.1:{}", proxy.port());
    let app = spawn_app_with(&[
        ("APP__CATALOG__CACHE__BACKEND", "redis"),
        ("APP__CATALOG__CACHE__REDIS_URL", through_proxy.as_str()),
    ])
    .await;
    let (url, product) = create(&app, "LATE-REDIS-1").await;
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 200);

    proxy.resume().await;
    let key = format!("shop:catalog:product:{}", product["id"].as_str().unwrap());
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut direct = client.get_multiplexed_async_connection().await.unwrap();
    crate::helpers::eventually("the product shared in Redis", || {
        let (app, url, key, mut direct) = (&app, url.clone(), key.clone(), direct.clone());
        async move {
            // Past the in-process layer's TTL, a read reaches Redis.
            let read = app.client.get(&url).send().await.ok()?;
            assert_eq!(read.status(), 200);
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<String>>(&mut direct)
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut direct)
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
    diesel::sql_query("VACUUM ANALYZE catalog.products, catalog.product_terms")
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
    // One word in relevance order reads the word's ranked entries (the
    // branch repo::list takes when the query is one word), a common word
    // (2,500 rows in 20,000) as cheaply as a rare one.
    let plan: Vec<Plan> = diesel::sql_query(
        "EXPLAIN SELECT id, t.rank FROM catalog.product_terms AS t \
         JOIN catalog.products ON products.id = t.product_id \
         WHERE t.term = websearch_to_tsquery('english', 'teapots')::text \
         ORDER BY t.rank DESC, t.product_id DESC LIMIT 21",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let plan: Vec<String> = plan.into_iter().map(|p| p.line).collect();
    assert!(
        plan.iter()
            .any(|l| l.contains("Index") && l.contains("product_terms_pkey")),
        "a one-word search does not read the ranked entries:\n{}",
        plan.join("\n")
    );
    assert!(
        !plan.iter().any(|l| l.contains("Sort")),
        "a one-word search sorts its matches:\n{}",
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

/// Waits (up to 60 s: statistics arrive late) until `reads` of `what` has
/// grown by `pages` or more since `before`.
async fn read_at_least<F, Fut>(what: &str, before: i64, pages: i64, reads: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let read = reads().await - before;
        if read >= pages {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the search did not read {what} ({read} reads for {pages} pages)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Every id of `GET /api/v1/products?{query}`, page after page.
async fn search_ids(app: &TestApp, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut url = format!("/api/v1/products?{query}");
    loop {
        let page: Value = app.get(&url).await.json().await.unwrap();
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("/api/v1/products?{query}&cursor={cursor}"),
            None => break ids,
        }
    }
}

/// The ids matching `q` and the SQL condition `and`, in the search's own
/// ranking, by SQL.
async fn ranked_by_sql(app: &TestApp, q: &str, and: &str) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = Text)]
        id: String,
    }
    let rows: Vec<Id> = diesel::sql_query(format!(
        "SELECT id::text AS id FROM catalog.products \
         WHERE search @@ websearch_to_tsquery('english', $1) AND {and} \
         ORDER BY ts_rank(search, websearch_to_tsquery('english', $1)) DESC, id DESC",
    ))
    .bind::<Text, _>(q)
    .load(&mut app.db().await)
    .await
    .unwrap();
    rows.into_iter().map(|r| r.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_word_search_pages_as_the_full_ranking_and_follows_every_change() {
    let app = spawn_app().await;
    let mut conn = app.db().await;
    // Ranks of several values: the word in the name only, in the name and
    // once or twice in the description, or in the description only.
    diesel::sql_query(
        "INSERT INTO catalog.products (id, sku, name, description, price_amount_minor, price_currency) \
         SELECT gen_random_uuid(), 'RANK-' || i, \
                CASE WHEN i % 5 = 0 THEN 'Kettle ' ELSE 'Teapot ' END || i, \
                'Item ' || i || repeat(' teapot', i % 3), 100 + i, 'EUR' \
         FROM generate_series(1, 600) AS i",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // Renamed in bulk: some leave the word, some join it, some only change
    // price (their entries stay as they were).
    diesel::sql_query(
        "UPDATE catalog.products SET name = 'Kettle ' || sku WHERE sku IN ('RANK-1', 'RANK-2', 'RANK-4')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query("UPDATE catalog.products SET name = 'Teapot ' || sku WHERE sku = 'RANK-15'")
        .execute(&mut conn)
        .await
        .unwrap();
    diesel::sql_query(
        "UPDATE catalog.products SET price_amount_minor = 5 WHERE sku LIKE 'RANK-3%'",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    // How often a table or an index was read (`count`, a query of the
    // statistics), as they have it once every backend has reported.
    let shared = &app;
    let reads = |count: &'static str| async move {
        let mut conn = shared.db().await;
        diesel::sql_query("SELECT pg_stat_force_next_flush()")
            .execute(&mut conn)
            .await
            .unwrap();
        let reads: Count = diesel::sql_query(count)
            .get_result(&mut conn)
            .await
            .unwrap();
        reads.n
    };
    let entry_reads = || {
        reads(
            "SELECT coalesce(sum(idx_scan), 0)::bigint AS n FROM pg_stat_user_indexes \
             WHERE indexrelname = 'product_terms_pkey'",
        )
    };
    let before = entry_reads().await;

    let expected = ranked_by_sql(&app, "teapots", "true").await;
    assert!(expected.len() > 400, "{} matches", expected.len());
    let found = search_ids(&app, "q=teapots&limit=37").await;
    assert_eq!(found, expected, "one word, paged, is the full ranking");
    // ... and it was the entries that answered (one read per page at least).
    let pages = i64::try_from(expected.len().div_ceil(37)).unwrap();
    read_at_least("product_terms", before, pages, entry_reads).await;
    // Filters apply to the ranked entries as to every search.
    let cheap = ranked_by_sql(&app, "teapots", "price_amount_minor <= 300").await;
    assert!(!cheap.is_empty() && cheap.len() < expected.len());
    assert_eq!(
        search_ids(&app, "q=teapots&max_price=300&limit=9").await,
        cheap
    );
    // Several words take the other branches; the same ranking: with no
    // filter from the vectors alone (ADR 0023), with one from the products.
    // Read by its index or, this few rows, whole: the table's own reads.
    let table_reads = || {
        reads(
            "SELECT (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::bigint AS n \
             FROM pg_stat_user_tables WHERE relname = 'product_search'",
        )
    };
    // The writes above (their triggers index product_search) counted first.
    diesel::sql_query("SELECT pg_stat_force_next_flush()")
        .execute(&mut conn)
        .await
        .unwrap();
    let several = ranked_by_sql(&app, "teapot item", "true").await;
    assert!(several.len() > 100, "{} matches", several.len());
    let vector_reads = table_reads().await;
    assert_eq!(search_ids(&app, "q=teapot%20item&limit=50").await, several);
    // One read per page at least.
    let pages = i64::try_from(several.len().div_ceil(50)).unwrap();
    read_at_least("product_search", vector_reads, pages, table_reads).await;
    let cheap_several = ranked_by_sql(&app, "teapot item", "price_amount_minor <= 300").await;
    assert!(!cheap_several.is_empty() && cheap_several.len() < several.len());
    assert_eq!(
        search_ids(&app, "q=teapot%20item&max_price=300&limit=50").await,
        cheap_several
    );

    // Through the API: a renamed product leaves its old word and is found
    // by its new one at once; a deleted one leaves no entry behind.
    let (url, product) = create(&app, "RENAMED-1").await;
    let id = product["id"].as_str().unwrap().to_owned();
    assert_eq!(search_ids(&app, "q=product").await, vec![id.clone()]);
    patch(&app, &url, json!({"name": "Copper samovar"})).await;
    assert_eq!(search_ids(&app, "q=samovar").await, vec![id]);
    assert!(search_ids(&app, "q=product").await.is_empty());
    diesel::sql_query("DELETE FROM catalog.products WHERE sku = 'RANK-10'")
        .execute(&mut conn)
        .await
        .unwrap();

    // What repo::one_word assumes: ASCII letters alone are at most one
    // word to PostgreSQL (stop words none), whatever their case and length.
    let most: Count = diesel::sql_query(
        "SELECT max(numnode(websearch_to_tsquery('english', w)))::bigint AS n FROM ( \
           SELECT substr(translate(md5(i::text), '0123456789', 'GHIJKLMNOP'), 1, 1 + i % 32) \
           FROM generate_series(1, 20000) AS i \
           UNION ALL VALUES ('or'), ('OR'), ('and'), ('not'), ('the'), ('teapots')) AS words (w)",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(most.n, 1);

    // The entries are exactly what the products' words make, no more.
    let stray: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM ( \
           (TABLE catalog.product_terms EXCEPT \
            SELECT t.* FROM catalog.products AS p, catalog.product_terms_of(p.search, p.id) AS t) \
           UNION ALL \
           (SELECT t.* FROM catalog.products AS p, catalog.product_terms_of(p.search, p.id) AS t \
            EXCEPT TABLE catalog.product_terms)) AS differ",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(stray.n, 0, "entries differ from the products' words");
    // ... and the vectors alone are exactly the products'.
    let stray: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM ( \
           (SELECT id, search::text FROM catalog.product_search \
            EXCEPT SELECT id, search::text FROM catalog.products) \
           UNION ALL \
           (SELECT id, search::text FROM catalog.products \
            EXCEPT SELECT id, search::text FROM catalog.product_search)) AS differ",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        stray.n, 0,
        "product_search differs from the products' vectors"
    );
    let entries: Count = diesel::sql_query("SELECT count(*) AS n FROM catalog.product_terms")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert!(entries.n > 600 * 4, "{} entries", entries.n);
}

/// A product's old entries go when its words change, whatever rank they
/// were stored with. The triggers found them by ranking the old words
/// again and matching the stored `real` exactly: once a PostgreSQL upgrade
/// (or a change of the ranking) gives another value, they matched nothing,
/// and a renamed product was still found by a word it lost, and twice by a
/// word it kept. A stored rank off by a little stands for that here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_products_old_words_go_whatever_rank_they_were_stored_with() {
    let app = spawn_app().await;
    let mut conn = app.db().await;
    let response = app
        .post_product(&json!({
            "sku": "DRIFT-1",
            "name": "Brass samovar",
            "price": {"amount_minor": 4500, "currency": "EUR"}
        }))
        .await;
    assert_eq!(response.status(), 201);
    let product: Value = response.json().await.unwrap();
    let id = product["id"].as_str().unwrap().to_owned();
    let url = app.url(&format!("/api/v1/products/{id}"));
    assert_eq!(search_ids(&app, "q=brass").await, vec![id.clone()]);
    let entries_of_product =
        format!("SELECT count(*) AS n FROM catalog.product_terms WHERE product_id = '{id}'::uuid");
    let drift = format!(
        "UPDATE catalog.product_terms SET rank = rank + 0.001 WHERE product_id = '{id}'::uuid"
    );
    diesel::sql_query(&drift).execute(&mut conn).await.unwrap();
    assert!(crate::helpers::count(&app, &entries_of_product).await > 0);

    patch(&app, &url, json!({"name": "Copper samovar"})).await;
    assert!(
        search_ids(&app, "q=brass").await.is_empty(),
        "found by a word it no longer has"
    );
    assert_eq!(
        search_ids(&app, "q=samovar").await,
        vec![id.clone()],
        "found once by a word it kept"
    );
    assert_eq!(search_ids(&app, "q=copper").await, vec![id.clone()]);
    // Its entries are exactly what its words make now.
    let stray = crate::helpers::count(
        &app,
        &format!(
            "SELECT count(*) AS n FROM ( \
               (SELECT * FROM catalog.product_terms WHERE product_id = '{id}'::uuid EXCEPT \
                SELECT t.* FROM catalog.products AS p, catalog.product_terms_of(p.search, p.id) AS t \
                WHERE p.id = '{id}'::uuid) \
               UNION ALL \
               (SELECT t.* FROM catalog.products AS p, catalog.product_terms_of(p.search, p.id) AS t \
                WHERE p.id = '{id}'::uuid EXCEPT \
                SELECT * FROM catalog.product_terms WHERE product_id = '{id}'::uuid)) AS differ"
        ),
    )
    .await;
    assert_eq!(stray, 0, "the product's entries differ from its words");

    // Deleted (by any writer), it leaves no entry behind either.
    diesel::sql_query(&drift).execute(&mut conn).await.unwrap();
    diesel::sql_query(format!(
        "DELETE FROM catalog.products WHERE id = '{id}'::uuid"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(crate::helpers::count(&app, &entries_of_product).await, 0);
    assert!(search_ids(&app, "q=samovar").await.is_empty());
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

/// Two instances on one database, each caching products in its own
/// memory, and a price changed by any writer (here SQL by hand, as a bulk
/// price load would; the module's own writes also announce an event, but
/// on RabbitMQ only one instance receives it): both instances serve the
/// new price within moments, not after the cache's minute, when a checkout
/// would have been charged the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_by_any_writer_is_not_served_stale_by_any_instance() {
    let first = spawn_app().await;
    let (url, _) = create(&first, "TWO-INSTANCES").await;
    let path = url.trim_start_matches(&first.address).to_owned();
    let settings = crate::helpers::test_settings(Some(first.database_url()), &[]);
    let second = app::startup::Application::build(settings).await.unwrap();
    let second_url = format!("http://127.0.0.1:{}{path}", second.port());
    let second_handle = second.handle();
    tokio::spawn(second.run_until_stopped());
    let price = |url: String| {
        let client = first.client.clone();
        async move {
            let product: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            product["price"]["amount_minor"].as_i64().unwrap()
        }
    };
    // Both instances cache the product (the cache's minute begins).
    for url in [&url, &second_url] {
        assert_eq!(price(url.clone()).await, 1299);
        assert_eq!(price(url.clone()).await, 1299);
    }
    diesel::sql_query(
        "UPDATE catalog.products SET price_amount_minor = 1599 WHERE sku = 'TWO-INSTANCES'",
    )
    .execute(&mut first.db().await)
    .await
    .unwrap();
    for url in [&url, &second_url] {
        let started = std::time::Instant::now();
        while price(url.clone()).await != 1599 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(15),
                "{url} still serves the old price"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    second_handle.stop();
}
