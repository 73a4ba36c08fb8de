//! The modules' contract suites through a topology's entry, each module apart in its own process.

use std::sync::Arc;

use kernel::{CallContext, Role};
use url::Url;
use uuid::Uuid;

use crate::checkout::shop::customer_token;
use crate::helpers::{mint_token, policy};
use crate::journey::{Topology, catalog_and_inventory_apart, payment_apart};

fn bearer(token: String) -> CallContext {
    CallContext::background().with_bearer_token(token)
}

fn entry(t: &Topology) -> Url {
    Url::parse(&t.entry).unwrap()
}

async fn catalog_apart() -> (catalog_api::contract::Harness, Topology) {
    let t = catalog_and_inventory_apart().await;
    let settings = &t.deployment.settings;
    let harness = catalog_api::contract::Harness {
        api: Arc::new(catalog_api::client::CatalogClient::new(
            crate::helpers::http(),
            entry(&t),
            policy("catalog"),
        )),
        admin: bearer(mint_token(settings, &[Role::Admin])),
        customer: bearer(mint_token(settings, &[Role::Customer])),
    };
    (harness, t)
}

async fn inventory_apart() -> (inventory_api::contract::Harness, Topology) {
    let t = catalog_and_inventory_apart().await;
    let settings = &t.deployment.settings;
    let harness = inventory_api::contract::Harness {
        api: Arc::new(inventory_api::client::InventoryClient::new(
            crate::helpers::http(),
            entry(&t),
            policy("inventory"),
        )),
        admin: bearer(mint_token(settings, &[Role::Admin])),
        service: bearer(
            app::compose::service_tokens(settings)
                .unwrap()
                .token()
                .unwrap(),
        ),
        customer: bearer(mint_token(settings, &[Role::Customer])),
    };
    (harness, t)
}

async fn payment_in_its_own_process() -> (payment_api::contract::Harness, Topology) {
    let t = payment_apart().await;
    let settings = &t.deployment.settings;
    let service = app::compose::service_tokens(settings)
        .unwrap()
        .token()
        .unwrap();
    let customer_id = Uuid::now_v7();
    let harness = payment_api::contract::Harness {
        api: Arc::new(payment_api::client::PaymentClient::new(
            crate::helpers::http(),
            entry(&t),
            policy("payment"),
        )),
        service: bearer(service),
        customer: bearer(customer_token(settings, customer_id)),
        customer_id,
        stranger: bearer(mint_token(settings, &[Role::Customer])),
    };
    (harness, t)
}

/// The user module in a process of its own behind the rest of the
/// shop (the user part of topology (e), without the other five apart).
async fn user_apart() -> (user_api::contract::Harness, Topology) {
    let t = crate::journey::apart(&["user"], true).await;
    let sign_in = ThroughEntry {
        entry: t.entry.clone(),
        settings: crate::helpers::test_settings(
            Some(t.deployment.db.url()),
            &[(
                "APP__AUTH__SIGNING_KEY_FILE",
                t.deployment
                    .settings
                    .auth
                    .signing_key_file
                    .to_str()
                    .unwrap(),
            )],
        ),
    };
    let harness = user_api::contract::Harness {
        api: Arc::new(user_api::client::UserClient::new(
            crate::helpers::http(),
            entry(&t),
            policy("user"),
        )),
        sign_in: Arc::new(sign_in),
    };
    (harness, t)
}

/// Signing in is `POST /api/v1/auth/token` at the topology's entry; an
/// admin is made as `shop admin create` makes one, in the user
/// module's database.
struct ThroughEntry {
    entry: String,
    settings: app::Settings,
}

#[async_trait::async_trait]
impl user_api::contract::SignIn for ThroughEntry {
    async fn context_for(&self, email: &str, password: &str) -> CallContext {
        let response = crate::helpers::http()
            .post(format!("{}/api/v1/auth/token", self.entry))
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        bearer(body["access_token"].as_str().unwrap().to_owned())
    }

    async fn admin(&self) -> CallContext {
        let email = format!("admin-{}@example.com", Uuid::new_v4().simple());
        let password = "a long and unusual passphrase";
        app::admin::create_admin(
            &self.settings,
            email.clone(),
            password.to_owned(),
            "Admin".to_owned(),
        )
        .await
        .unwrap();
        self.context_for(&email, password).await
    }
}

mod e_user {
    user_api::user_contract_suite!(super::user_apart);
}

mod c_catalog {
    catalog_api::catalog_contract_suite!(super::catalog_apart);
}

mod c_inventory {
    inventory_api::inventory_contract_suite!(super::inventory_apart);
}

mod d_payment {
    payment_api::payment_contract_suite!(super::payment_in_its_own_process);
}
