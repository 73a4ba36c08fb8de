//! One customer journey, written once and run unchanged against every
//! topology the shop supports: the monolith on each transport, the catalog
//! and inventory in a process of their own, the payment module in a process
//! of its own, and every module in its own process behind a gateway. Each
//! topology is real `shop` processes on one database (each module in its
//! own schema), started with the environment a deployment would give them.
//!
//! The journey: register and sign in; an admin creates and stocks a product
//! and the catalog's availability follows the stock; search finds it; two
//! tabs edit the cart from one read and the second is refused (If-Match); a
//! checkout with the success card is confirmed and one with the declined
//! card fails; the confirmed order is cancelled and its payment refunded;
//! a second order buys the rest and ships; the order emails arrive; no
//! handler dead-lettered anything. Then a poison event for each module that
//! handles events: the entry lists both dead letters, a page at a time, and
//! redrives each at the process holding it.

use diesel_async::{AsyncConnection as _, RunQueryDsl as _};
use kernel::Role;
use payment_sandbox::cards;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::checkout::shop::{fill_cart, get_json, place, settled, stock, stocked_product};
use crate::helpers::{Shop, eventually, free_port, mint_token, send_json};
use crate::saga_crash::{Deployment, refs};

/// The processes of one topology, and the address clients use.
pub(crate) struct Topology {
    pub(crate) deployment: Deployment,
    pub(crate) entry: String,
    /// The modules handling events that the entry process serves itself.
    entry_handles: Vec<&'static str>,
    _processes: Vec<Shop>,
}

/// The modules that handle events (and so keep dead letters).
const HANDLING: [&str; 2] = ["catalog", "notification"];

/// Where each process of a topology listens, chosen before any starts so
/// each can be pointed at the others.
pub(crate) fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// `APP__MODULES__<M>__MODE=remote` and its URL, for each `(module, url)`.
fn remotes(modules: &[(&str, &str)]) -> Vec<(String, String)> {
    modules
        .iter()
        .flat_map(|(module, url)| {
            let key = format!("APP__MODULES__{}", module.to_uppercase());
            [
                (format!("{key}__MODE"), "remote".to_owned()),
                (format!("{key}__URL"), (*url).to_owned()),
            ]
        })
        .collect()
}

/// Starts `shop` on `port` with the deployment's environment (on the
/// broker when `broker`), `extra` and the remote modules.
pub(crate) fn start(
    deployment: &Deployment,
    port: u16,
    broker: bool,
    extra: &[(&str, &str)],
    remote: &[(&str, &str)],
) -> Shop {
    let mut env = if broker {
        deployment.split_env(extra)
    } else {
        deployment.env(extra)
    };
    env.extend(remotes(remote));
    Shop::start_on(port, &refs(&env))
}

pub(crate) async fn live(processes: &[Shop]) {
    for process in processes {
        process.wait_live().await;
    }
}

/// One process of a split deployment: its port, its `extra` settings and
/// the `(module, url)` it calls remotely.
pub(crate) type Part<'a> = (u16, &'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)]);

/// Starts each of `parts` on the broker, in order, and waits until all are live.
pub(crate) async fn start_split(deployment: &Deployment, parts: &[Part<'_>]) -> Vec<Shop> {
    let processes: Vec<Shop> = parts
        .iter()
        .map(|(port, extra, remote)| start(deployment, *port, true, extra, remote))
        .collect();
    live(&processes).await;
    processes
}

/// (a) and (b): every module in one process, on the in-process bus or on RabbitMQ.
async fn monolith(broker: bool) -> Topology {
    let deployment = Deployment::new().await;
    let port = free_port();
    let processes = vec![start(&deployment, port, broker, &[], &[])];
    live(&processes).await;
    Topology {
        deployment,
        entry: url(port),
        entry_handles: HANDLING.to_vec(),
        _processes: processes,
    }
}

/// `modules` in a process of their own, the rest of the shop in the entry
/// process, which forwards their routes; both on the broker when `broker`.
pub(crate) async fn apart(modules: &[&str], broker: bool) -> Topology {
    let deployment = Deployment::new().await;
    let (main, other) = (free_port(), free_port());
    let (main_url, other_url) = (url(main), url(other));
    let forwarded: Vec<(&str, &str)> = modules.iter().map(|m| (*m, other_url.as_str())).collect();
    // Tokens are verified with the user module's keys, wherever it runs.
    let user_there: &[(&str, &str)] = if modules.contains(&"user") {
        &[]
    } else {
        &[("user", main_url.as_str())]
    };
    let enabled = modules.join(",");
    let processes = vec![
        start(&deployment, main, broker, &[], &forwarded),
        start(
            &deployment,
            other,
            broker,
            &[("APP__MODULES__ENABLED", enabled.as_str())],
            user_there,
        ),
    ];
    live(&processes).await;
    Topology {
        deployment,
        entry: main_url,
        entry_handles: HANDLING
            .into_iter()
            .filter(|m| !modules.contains(m))
            .collect(),
        _processes: processes,
    }
}

/// (c): the catalog and the inventory in a process of their own.
pub(crate) async fn catalog_and_inventory_apart() -> Topology {
    apart(&["catalog", "inventory"], true).await
}

/// (d): the payment module in a process of its own. It publishes and
/// subscribes to no event, so both processes keep the in-process bus.
pub(crate) async fn payment_apart() -> Topology {
    apart(&["payment"], false).await
}

/// (e): every module in its own process, a gateway in front that serves
/// none of them, and the sandbox provider as a process of its own.
async fn every_module_apart() -> Topology {
    let deployment = Deployment::new().await;
    let modules = [
        "user",
        "catalog",
        "inventory",
        "payment",
        "order",
        "notification",
    ];
    let ports: Vec<u16> = modules.iter().map(|_| free_port()).collect();
    let urls: Vec<String> = ports.iter().map(|p| url(*p)).collect();
    let at = |module: &str| {
        let i = modules.iter().position(|m| *m == module).unwrap();
        urls[i].as_str()
    };
    let provider_port = free_port();
    let provider = format!("{}/", url(provider_port));
    let sandbox = Shop::run(
        provider_port,
        &["sandbox-provider", "--port", &provider_port.to_string()],
        &[],
    );
    let mut processes = Vec::new();
    for module in modules {
        let mut remote = Vec::new();
        if module != "user" {
            remote.push(("user", at("user")));
        }
        if module == "order" {
            remote.extend(["catalog", "inventory", "payment"].map(|m| (m, at(m))));
        }
        let mut extra = vec![("APP__MODULES__ENABLED", module)];
        if module == "payment" {
            extra.push(("APP__PAYMENT__PROVIDER_URL", provider.as_str()));
        }
        let port = ports[modules.iter().position(|m| *m == module).unwrap()];
        processes.push(start(&deployment, port, true, &extra, &remote));
    }
    // The gateway as the all-split topology starts it: no module enabled
    // (`APP__MODULES__ENABLED=` empty), every module remote, and the
    // broker's settings every process of a split deployment gets; it
    // forwards each module, and needs no database and connects to no broker
    // (it has no events). (A process that also serves modules lists those
    // it forwards in `modules.enabled`:
    // `topology::gateway_forwards_catalog_routes_to_the_extracted_catalog`.)
    let gateway = free_port();
    let forwarded: Vec<(&str, &str)> = modules.iter().map(|m| (*m, at(m))).collect();
    let no_module = [("APP__MODULES__ENABLED", "")];
    processes.push(start(&deployment, gateway, true, &no_module, &forwarded));
    live(&processes).await;
    processes.push(sandbox);
    Topology {
        deployment,
        entry: url(gateway),
        entry_handles: Vec::new(),
        _processes: processes,
    }
}

/// The journey, through `t.entry` only.
async fn customer_journey(t: &Topology) {
    let http = crate::helpers::http();
    let base = t.entry.as_str();
    let api = |path: &str| format!("{base}/api/v1{path}");
    let admin = mint_token(&t.deployment.settings, &[Role::Admin]);

    // Register and sign in.
    let email = format!("journey-{}@example.com", Uuid::new_v4().simple());
    let password = "a journey of many steps";
    let registered = http
        .post(api("/users"))
        .json(&json!({"email": email, "password": password, "display_name": "Journey"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        registered.status(),
        201,
        "{}",
        registered.text().await.unwrap()
    );
    let signed_in: Value = send_json(
        http.post(api("/auth/token"))
            .json(&json!({"email": email, "password": password})),
    )
    .await;
    let customer = signed_in["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {signed_in}"))
        .to_owned();

    // An admin creates and stocks a product; the catalog follows the stock.
    let sku = format!("JRN-{}", &Uuid::new_v4().simple().to_string()[..8]).to_uppercase();
    let product = stocked_product(&http, base, &admin, &sku, 1500, 20).await;
    let availability = |wanted: &'static str| {
        let (http, url) = (http.clone(), api(&format!("/products/{product}")));
        async move {
            eventually(&format!("availability {wanted}"), || async {
                let product: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
                (product["availability"] == wanted).then_some(())
            })
            .await;
        }
    };
    availability("in_stock").await;

    // Search finds it.
    let found: Value = get_json(&http, api(&format!("/products?q={sku}")), &customer).await;
    assert!(
        found["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|p| p["id"] == product.as_str())),
        "search for {sku}: {found}"
    );

    // Two tabs fill the cart from one read: the second is refused, the
    // first tab's cart kept (If-Match with the GET's ETag).
    let read = http
        .get(api("/cart"))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let version = read.headers()["etag"].to_str().unwrap().to_owned();
    for (quantity, status) in [(1, 200), (3, 412)] {
        let tab = http
            .put(api("/cart"))
            .bearer_auth(&customer)
            .header("if-match", &version)
            .json(&json!({"items": [{"product_id": product, "quantity": quantity}]}))
            .send()
            .await
            .unwrap();
        let made = tab.headers().get("etag").cloned();
        assert_eq!(tab.status(), status, "{}", tab.text().await.unwrap());
        if status == 200 {
            // The answer names the version it made, as a GET does.
            let now = http
                .get(api("/cart"))
                .bearer_auth(&customer)
                .send()
                .await
                .unwrap();
            assert_eq!(now.headers().get("etag"), made.as_ref());
        }
    }

    // Checkout with the success card: confirmed.
    fill_cart(&http, base, &customer, &product, 2).await;
    let placed = place(&http, base, &customer, "journey-1", cards::SUCCEEDS).await;
    let first = placed_body(placed).await;
    let first_id = first["id"].as_str().unwrap().to_owned();
    let first = settled(&http, base, &customer, &first_id).await;
    assert_eq!(first["status"], "confirmed", "{first}");
    assert_eq!(stock(&http, base, &admin, &sku).await, (18, 0));

    // With the declined card: failed, nothing held.
    fill_cart(&http, base, &customer, &product, 1).await;
    let placed = place(&http, base, &customer, "journey-2", cards::DECLINED).await;
    let declined = placed_body(placed).await;
    let declined_id = declined["id"].as_str().unwrap().to_owned();
    let declined = settled(&http, base, &customer, &declined_id).await;
    assert_eq!(declined["status"], "failed", "{declined}");
    assert_eq!(stock(&http, base, &admin, &sku).await, (18, 0));

    // Cancel the confirmed order: refunded, the stock back on the shelf.
    let cancelled = http
        .post(api(&format!("/orders/{first_id}/cancel")))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        cancelled.status(),
        200,
        "{}",
        cancelled.text().await.unwrap()
    );
    let cancelled = settled(&http, base, &customer, &first_id).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let payment: Value = get_json(
        &http,
        api(&format!("/payments/orders/{first_id}")),
        &customer,
    )
    .await;
    assert_eq!(payment["status"], "refunded", "{payment}");
    assert_eq!(stock(&http, base, &admin, &sku).await, (20, 0));

    // The rest sells out, and the admin ships it.
    fill_cart(&http, base, &customer, &product, 20).await;
    let placed = place(&http, base, &customer, "journey-3", cards::SUCCEEDS).await;
    let last = placed_body(placed).await;
    let last_id = last["id"].as_str().unwrap().to_owned();
    let last = settled(&http, base, &customer, &last_id).await;
    assert_eq!(last["status"], "confirmed", "{last}");
    availability("out_of_stock").await;
    let shipped = http
        .post(api(&format!("/orders/{last_id}/ship")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(shipped.status(), 200, "{}", shipped.text().await.unwrap());
    let shipped: Value = shipped.json().await.unwrap();
    assert_eq!(shipped["status"], "shipped", "{shipped}");

    // The customer's emails arrive.
    let expected = [
        "Welcome to the shop".to_owned(),
        format!("Order confirmed: {first_id}"),
        format!("Order not completed: {declined_id}"),
        format!("Order cancelled: {first_id}"),
        format!("Order confirmed: {last_id}"),
    ];
    let mail = std::path::PathBuf::from(&t.deployment.mail);
    eventually("the customer's emails", || {
        let (mail, email) = (mail.clone(), email.clone());
        let expected = expected.clone();
        async move {
            let sent: Vec<String> = std::fs::read_dir(&mail)
                .ok()?
                .flatten()
                .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
                .filter(|text| text.contains(&email))
                .collect();
            expected
                .iter()
                .all(|subject| sent.iter().any(|text| text.contains(subject.as_str())))
                .then_some(())
        }
    })
    .await;

    // No handler gave up on any event.
    let mut conn = diesel_async::AsyncPgConnection::establish(t.deployment.db.url())
        .await
        .unwrap();
    for schema in ["catalog", "notification"] {
        let dead: Count =
            diesel::sql_query(format!("SELECT count(*) AS n FROM {schema}.dead_letters"))
                .get_result(&mut conn)
                .await
                .unwrap();
        assert_eq!(dead.n, 0, "dead letters in {schema}");
    }
    drop(conn);

    dead_letters_wherever_they_are(t).await;
}

/// Two poison events, one for each module that handles events, wherever it
/// runs: both dead letters are listed, a page at a time, and redriven
/// through the entry, which asks the process that holds each.
async fn dead_letters_wherever_they_are(t: &Topology) {
    let http = crate::helpers::http();
    let api = |path: &str| format!("{}/api/v1{path}", t.entry);
    let admin = mint_token(&t.deployment.settings, &[Role::Admin]);
    let mut conn = diesel_async::AsyncPgConnection::establish(t.deployment.db.url())
        .await
        .unwrap();
    // Payloads no handler can read, as a buggy publisher might write them:
    // a product for the notification module, a stock level for the catalog.
    for (schema, event_type) in [
        ("catalog", "catalog.product_created.v1"),
        ("inventory", "inventory.stock_changed.v1"),
    ] {
        let id = Uuid::now_v7();
        let envelope = json!({
            "id": id, "type": event_type, "source": schema, "aggregate_id": "poison",
            "occurred_at": chrono::Utc::now(), "request_id": format!("poison-{schema}"),
            "causation_id": null, "payload": {"not": "readable"}
        });
        diesel::sql_query(format!(
            "INSERT INTO {schema}.outbox (id, event_type, aggregate_id, envelope) \
             VALUES ($1, $2, 'poison', $3)"
        ))
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<diesel::sql_types::Text, _>(event_type)
        .bind::<diesel::sql_types::Jsonb, _>(&envelope)
        .execute(&mut conn)
        .await
        .unwrap();
    }

    let list = |query: String| {
        let (http, admin, url) = (
            http.clone(),
            admin.clone(),
            api(&format!("/admin/dead-letters{query}")),
        );
        async move { crate::helpers::try_get_json::<Value>(&http, url, &admin).await }
    };
    let all = eventually("both dead letters, through the entry", || async {
        let page = list(String::new()).await?;
        (page["items"].as_array()?.len() == 2).then_some(page)
    })
    .await;
    let modules: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["module"].as_str().unwrap())
        .collect();
    let mut sorted = modules.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, HANDLING, "{all}");
    assert!(all["next_cursor"].is_null(), "{all}");

    // A page at a time, in the list's order, across the processes.
    let first = list("?limit=1".to_owned()).await.unwrap();
    assert_eq!(first["items"][0], all["items"][0], "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let second = list(format!("?limit=1&cursor={cursor}")).await.unwrap();
    assert_eq!(second["items"][0], all["items"][1], "{second}");
    assert!(second["next_cursor"].is_null(), "{second}");

    // `scope=process`: only the entry process's own.
    let own = list("?scope=process".to_owned()).await.unwrap();
    let mut own: Vec<&str> = own["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["module"].as_str().unwrap())
        .collect();
    own.sort_unstable();
    assert_eq!(own, t.entry_handles, "the entry process's own dead letters");

    // Redriven through the entry: the still-broken stock event fails again
    // at the catalog and says why; the product event, fixed, goes through.
    let id_of = |module: &str| {
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["module"] == module)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let redrive = |id: String| {
        let (http, admin) = (http.clone(), admin.clone());
        let url = api(&format!("/admin/dead-letters/{id}/redrive"));
        async move { crate::helpers::post_as(&http, url, &admin).await }
    };
    let again = redrive(id_of("catalog")).await;
    let problem = crate::helpers::assert_problem(again, 409, "redrive_failed").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("inventory.stock_changed.v1"),
        "{problem}"
    );
    let product = json!({"product_id": Uuid::now_v7(), "sku": "REDRIVEN-1", "name": "Redriven",
        "price": {"amount_minor": 1, "currency": "EUR"}, "active": true});
    diesel::sql_query(
        "UPDATE notification.dead_letters SET envelope = jsonb_set(envelope, '{payload}', $1) \
         WHERE id = $2",
    )
    .bind::<diesel::sql_types::Jsonb, _>(&product)
    .bind::<diesel::sql_types::Uuid, _>(id_of("notification").parse::<Uuid>().unwrap())
    .execute(&mut conn)
    .await
    .unwrap();
    let fixed = redrive(id_of("notification")).await;
    assert_eq!(fixed.status(), 200, "{}", fixed.text().await.unwrap());
    let gone = redrive(id_of("notification")).await;
    crate::helpers::assert_problem(gone, 404, "dead_letter_not_found").await;
    let left = list(String::new()).await.unwrap();
    assert_eq!(left["items"].as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left["items"][0]["module"], "catalog", "{left}");
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monolith_on_the_in_process_bus() {
    customer_journey(&monolith(false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_monolith_on_rabbitmq() {
    customer_journey(&monolith(true).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_catalog_and_inventory_in_their_own_process() {
    customer_journey(&catalog_and_inventory_apart().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_payment_in_its_own_process() {
    customer_journey(&payment_apart().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_every_module_in_its_own_process_behind_a_gateway() {
    customer_journey(&every_module_apart().await).await;
}

/// The order a checkout answered: 201 when its saga finished within
/// `order.checkout_wait_ms`, 202 when it runs on (a loaded machine, a
/// module in another process); either way `settled` then reads its end.
async fn placed_body(placed: reqwest::Response) -> Value {
    let status = placed.status().as_u16();
    let body = placed.text().await.unwrap();
    assert!(matches!(status, 201 | 202), "{status}: {body}");
    serde_json::from_str(&body).unwrap()
}
