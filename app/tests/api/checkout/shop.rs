//! Checkout helpers shared by the saga suites (checkout, crash, extracted, the topologies).

use kernel::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{eventually, post_as, try_get_json};
pub use crate::helpers::{get_json, post_json};

/// A token for the customer `id`, signed with `settings`' key.
pub fn customer_token(settings: &app::Settings, id: Uuid) -> String {
    let key = app::compose::signing_key(settings).unwrap();
    auth::Issuer::new(key, settings.auth.policy())
        .issue(id, &[Role::Customer])
        .unwrap()
        .token
}

/// Creates a product priced `price_minor` EUR and stocks `units`;
/// returns its id.
pub async fn stocked_product(
    client: &reqwest::Client,
    base: &str,
    admin: &str,
    sku: &str,
    price_minor: i64,
    units: i32,
) -> String {
    let response = client
        .post(format!("{base}/api/v1/products"))
        .bearer_auth(admin)
        .json(&json!({"sku": sku, "name": format!("Product {sku}"),
            "price": {"amount_minor": price_minor, "currency": "EUR"}}))
        .send()
        .await
        .unwrap();
    let product: Value = response.json().await.unwrap();
    let id = product["id"]
        .as_str()
        .unwrap_or_else(|| panic!("product not created: {product}"))
        .to_owned();
    let stocked = client
        .post(format!("{base}/api/v1/inventory/{sku}/adjustments"))
        .bearer_auth(admin)
        .json(&json!({"quantity": units, "reason": "receive"}))
        .send()
        .await
        .unwrap();
    assert_ok(stocked).await;
    id
}

/// Asserts a 200, showing the body otherwise.
async fn assert_ok(response: reqwest::Response) {
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Puts `quantity` of `product` in the cart of the token's customer.
pub async fn fill_cart(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    product: &str,
    quantity: i32,
) {
    let filled = client
        .put(format!("{base}/api/v1/cart"))
        .bearer_auth(token)
        .json(&json!({"items": [{"product_id": product, "quantity": quantity}]}))
        .send()
        .await
        .unwrap();
    assert_ok(filled).await;
}

/// `POST /orders` with `key` and `card`.
pub async fn place(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    card: &str,
) -> reqwest::Response {
    try_place(client, base, token, key, card).await.unwrap()
}

/// [`place`], for a shop that may die before it answers: the error, if so.
pub async fn try_place(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    card: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/api/v1/orders"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({"payment_method": {"card_number": card}}))
        .send()
        .await
}

/// `POST /orders/{id}/{action}` (`cancel`, `ship`) as the bearer of `token`.
pub async fn order_action(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    action: &str,
) -> reqwest::Response {
    post_as(client, format!("{base}/api/v1/orders/{id}/{action}"), token).await
}

/// Polls the order until it is settled (confirmed, failed, cancelled).
pub async fn settled(client: &reqwest::Client, base: &str, token: &str, id: &str) -> Value {
    eventually(&format!("order {id} settles"), || async {
        let order: Value =
            try_get_json(client, format!("{base}/api/v1/orders/{id}"), token).await?;
        matches!(
            order["status"].as_str(),
            Some("confirmed" | "failed" | "cancelled")
        )
        .then_some(order)
    })
    .await
}

/// `(on_hand, reserved)` of a SKU.
pub async fn stock(client: &reqwest::Client, base: &str, admin: &str, sku: &str) -> (i64, i64) {
    let level: Value = get_json(client, format!("{base}/api/v1/inventory/{sku}"), admin).await;
    (
        level["on_hand"].as_i64().unwrap(),
        level["reserved"].as_i64().unwrap(),
    )
}

/// The kinds of an order's timeline, in order.
pub async fn timeline(client: &reqwest::Client, base: &str, token: &str, id: &str) -> Vec<String> {
    let entries: Vec<Value> =
        get_json(client, format!("{base}/api/v1/orders/{id}/timeline"), token).await;
    entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}
