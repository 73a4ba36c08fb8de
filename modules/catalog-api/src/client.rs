//! [`CatalogClient`]: `CatalogApi` over HTTP, for processes where the catalog is remote.

use kernel::{CallContext, Page, ProblemBody};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::{CatalogApi, CatalogError, ListProducts, NewProduct, Product, ProductId, ProductPatch};

/// Talks to a catalog module served by another process.
///
/// Sends the caller's request id (`x-request-id`) and bearer token, and
/// bounds each call by the context's deadline. Problem responses come back
/// as the same [`CatalogError`] variants the in-process module returns.
#[derive(Debug, Clone)]
pub struct CatalogClient {
    http: reqwest::Client,
    base: Url,
}

impl CatalogClient {
    /// A client for the catalog served at `base` (e.g. `http://catalog:8080`).
    pub fn new(http: reqwest::Client, base: Url) -> CatalogClient {
        CatalogClient { http, base }
    }

    fn request(&self, cx: &CallContext, method: Method, path: &str) -> RequestBuilder {
        let url = format!("{}/api/v1{path}", self.base.as_str().trim_end_matches('/'));
        let mut builder = self
            .http
            .request(method, url)
            .header("x-request-id", cx.request_id().as_str());
        if let Some(token) = cx.bearer_token() {
            builder = builder.bearer_auth(token);
        }
        if let Some(remaining) = cx.remaining() {
            builder = builder.timeout(remaining);
        }
        builder
    }

    async fn send<T: DeserializeOwned>(
        builder: RequestBuilder,
        product: Option<ProductId>,
        sku: Option<&str>,
    ) -> Result<T, CatalogError> {
        let response = builder
            .send()
            .await
            .map_err(|e| CatalogError::Unavailable(transport_error(&e)))?;
        let status = response.status();
        if status.is_success() {
            return response.json::<T>().await.map_err(|e| {
                CatalogError::Unexpected(format!("unreadable catalog response: {e}"))
            });
        }
        match response.json::<ProblemBody>().await {
            Ok(problem) => Err(CatalogError::from_problem(problem, product, sku)),
            Err(_) if is_unavailable(status) => Err(CatalogError::Unavailable(format!(
                "the catalog answered {status}"
            ))),
            Err(_) => Err(CatalogError::Unexpected(format!(
                "the catalog answered {status} without a problem body"
            ))),
        }
    }
}

fn is_unavailable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the catalog did not answer in time".to_owned()
    } else if e.is_connect() {
        "cannot connect to the catalog".to_owned()
    } else {
        format!("the call to the catalog failed: {e}")
    }
}

#[async_trait::async_trait]
impl CatalogApi for CatalogClient {
    async fn create_product(
        &self,
        cx: &CallContext,
        new: NewProduct,
    ) -> Result<Product, CatalogError> {
        let builder = self.request(cx, Method::POST, "/products").json(&new);
        Self::send(builder, None, Some(&new.sku)).await
    }

    async fn get_product(&self, cx: &CallContext, id: ProductId) -> Result<Product, CatalogError> {
        let builder = self.request(cx, Method::GET, &format!("/products/{id}"));
        Self::send(builder, Some(id), None).await
    }

    async fn list_products(
        &self,
        cx: &CallContext,
        query: ListProducts,
    ) -> Result<Page<Product>, CatalogError> {
        let mut params = vec![("limit", query.limit.get().to_string())];
        if let Some(cursor) = &query.cursor {
            params.push(("cursor", cursor.as_str().to_owned()));
        }
        let builder = self.request(cx, Method::GET, "/products").query(&params);
        Self::send(builder, None, None).await
    }

    async fn update_product(
        &self,
        cx: &CallContext,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Product, CatalogError> {
        let builder = self
            .request(cx, Method::PATCH, &format!("/products/{id}"))
            .json(&patch);
        Self::send(builder, Some(id), None).await
    }
}
