//! The scene checkout tests start from (shop, stocked product, customer) and the captures count.

use kernel::Role;
use uuid::Uuid;

use super::shop::{customer_token, stocked_product};
use crate::helpers::{TestApp, count, spawn_app_with};

/// Captures in the payment ledger, all orders.
pub async fn captures(app: &TestApp) -> i64 {
    count(
        app,
        "SELECT count(*) AS n FROM payment.ledger WHERE kind = 'captured'",
    )
    .await
}

pub struct Scene {
    pub app: TestApp,
    pub admin: String,
    pub customer: Uuid,
    pub token: String,
    pub product: String,
}

pub async fn scene(sku: &str, units: i32) -> Scene {
    scene_with(sku, units, &[]).await
}

pub async fn scene_with(sku: &str, units: i32, extra: &[(&str, &str)]) -> Scene {
    let app = spawn_app_with(extra).await;
    let admin = app.token(&[Role::Admin]);
    let product = stocked_product(&app.client, &app.address, &admin, sku, 1299, units).await;
    let customer = Uuid::now_v7();
    let token = customer_token(&app.settings, customer);
    Scene {
        app,
        admin,
        customer,
        token,
        product,
    }
}
