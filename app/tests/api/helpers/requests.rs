//! Requests sent as the bearer of a token: the answer, or its JSON body.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::TestApp;

/// Sends `request`; its JSON answer.
pub async fn send_json<T: DeserializeOwned>(request: reqwest::RequestBuilder) -> T {
    request.send().await.unwrap().json().await.unwrap()
}

/// GET `url` as the bearer of `token`.
pub async fn get_as(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    token: impl std::fmt::Display,
) -> reqwest::Response {
    client.get(url).bearer_auth(token).send().await.unwrap()
}

/// POST to `url` (no body) as the bearer of `token`.
pub async fn post_as(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    token: impl std::fmt::Display,
) -> reqwest::Response {
    client.post(url).bearer_auth(token).send().await.unwrap()
}

/// GET `url` as the bearer of `token`; the JSON answer.
pub async fn get_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    token: impl std::fmt::Display,
) -> T {
    send_json(client.get(url).bearer_auth(token)).await
}

/// GET `url` as the bearer of `token`; the JSON answer, or `None` when the
/// request or its body failed (for a poll that tries again).
pub async fn try_get_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    token: impl std::fmt::Display,
) -> Option<T> {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// POST to `url` (no body) as the bearer of `token`; the JSON answer.
pub async fn post_json(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    token: impl std::fmt::Display,
) -> Value {
    post_as(client, url, token).await.json().await.unwrap()
}

/// Subscribes `url` to `catalog.product_created.v1` webhooks as the bearer
/// of `token`.
pub async fn subscribe_webhook(
    app: &TestApp,
    token: impl std::fmt::Display,
    url: &str,
) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/admin/webhooks"))
        .bearer_auth(token)
        .json(&json!({"url": url, "event_types": ["catalog.product_created.v1"]}))
        .send()
        .await
        .unwrap()
}

impl TestApp {
    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }
}
