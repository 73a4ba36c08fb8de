//! The shop under test as the load generator sees it: sign-in, customers,
//! products and stock, over HTTP.

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use crate::PASSWORD;

/// The shop under test, reached over HTTP.
#[derive(Clone)]
pub(crate) struct Shop {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
}

impl Shop {
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        key: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.with_context(|| path.to_owned())?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok((status, body))
    }

    pub(crate) async fn sign_in(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/token",
                None,
                Some(json!({"email": email, "password": password})),
                None,
            )
            .await?;
        ensure!(status == 200, "sign-in {email}: {status} {body}");
        Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
    }

    pub(crate) async fn customer(&self) -> anyhow::Result<String> {
        let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/users",
                None,
                Some(json!({"email": email, "password": PASSWORD, "display_name": "Bench"})),
                None,
            )
            .await?;
        ensure!(status == 201, "register: {status} {body}");
        self.sign_in(&email, PASSWORD).await
    }

    pub(crate) async fn product(
        &self,
        admin: &str,
        sku: &str,
        units: i64,
    ) -> anyhow::Result<String> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/products",
                Some(admin),
                Some(json!({"sku": sku, "name": format!("Bench {sku}"),
                    "price": {"amount_minor": 500, "currency": "EUR"}})),
                None,
            )
            .await?;
        ensure!(status == 201, "product {sku}: {status} {body}");
        let (status, level) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/inventory/{sku}/adjustments"),
                Some(admin),
                Some(json!({"quantity": units, "reason": "receive"})),
                None,
            )
            .await?;
        ensure!(status == 200, "stock {sku}: {status} {level}");
        Ok(body["id"].as_str().unwrap_or_default().to_owned())
    }

    pub(crate) async fn stock(&self, admin: &str, sku: &str) -> anyhow::Result<(i64, i64)> {
        let (status, level) = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/inventory/{sku}"),
                Some(admin),
                None,
                None,
            )
            .await?;
        ensure!(status == 200, "stock {sku}: {status} {level}");
        Ok((
            level["on_hand"].as_i64().unwrap_or(-1),
            level["reserved"].as_i64().unwrap_or(-1),
        ))
    }
}
