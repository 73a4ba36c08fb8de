//! [`CatalogClient`]: `CatalogApi` over HTTP, for processes where the catalog is remote.

use kernel::{CallContext, Failure, Page};
use remote::{ModuleClient, RemoteError};
use reqwest::{Method, RequestBuilder};
use resilience::Policy;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use url::Url;

use crate::{
    CatalogApi, CatalogError, Category, Fetched, ListProducts, NewCategory, NewProduct, Product,
    ProductId, ProductPatch,
};

/// Talks to a catalog module served by another process.
///
/// Sends the caller's request id and bearer token, and bounds each call by
/// the context's deadline ([`ModuleClient`]). Problem responses come back as
/// the same [`CatalogError`] variants the in-process module returns.
#[derive(Debug, Clone)]
pub struct CatalogClient {
    remote: ModuleClient,
    /// The last version of each product seen, for the fallback.
    last_known: Arc<std::sync::Mutex<std::collections::HashMap<ProductId, Product>>>,
}

/// Products remembered for the fallback, at most.
const LAST_KNOWN_MAX: usize = 10_000;

impl CatalogClient {
    /// A client for the catalog served at `base` (e.g. `http://catalog:8080`).
    pub fn new(http: reqwest::Client, base: Url, policy: Arc<Policy>) -> CatalogClient {
        CatalogClient {
            remote: ModuleClient::new(http, base, "catalog", policy),
            last_known: Arc::default(),
        }
    }

    fn remember(&self, product: &Product) {
        if let Ok(mut known) = self.last_known.lock() {
            if known.len() >= LAST_KNOWN_MAX {
                known.clear();
            }
            known.insert(product.id, product.clone());
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        cx: &CallContext,
        idempotent: bool,
        builder: RequestBuilder,
        product: Option<ProductId>,
        sku: Option<&str>,
    ) -> Result<T, CatalogError> {
        self.remote
            .send(cx, builder, idempotent)
            .await
            .map_err(|e| match e {
                RemoteError::Problem(problem) => CatalogError::from_problem(problem, product, sku),
                RemoteError::Unavailable(reason) => {
                    CatalogError::Common(Failure::Unavailable(reason))
                }
                RemoteError::Degraded(d) => CatalogError::Common(Failure::Degraded(d)),
                RemoteError::Unexpected(reason) => {
                    CatalogError::Common(Failure::Unexpected(reason))
                }
            })
    }
}

#[async_trait::async_trait]
impl CatalogApi for CatalogClient {
    async fn create_product(
        &self,
        cx: &CallContext,
        new: NewProduct,
    ) -> Result<Product, CatalogError> {
        let builder = self
            .remote
            .request(cx, Method::POST, "/products")
            .json(&new);
        self.send(cx, false, builder, None, Some(&new.sku)).await
    }

    /// The fallback, declared next to the call: the last version this
    /// client saw, marked stale, when the catalog cannot answer.
    async fn get_product_or_last_known(
        &self,
        cx: &CallContext,
        id: ProductId,
    ) -> Result<Fetched, CatalogError> {
        match self.get_product(cx, id).await {
            Ok(product) => Ok(Fetched {
                product,
                stale: false,
            }),
            Err(
                error @ (CatalogError::Common(Failure::Unavailable(_))
                | CatalogError::Common(Failure::Degraded(_))),
            ) => {
                let known = self
                    .last_known
                    .lock()
                    .ok()
                    .and_then(|k| k.get(&id).cloned());
                match known {
                    Some(product) => {
                        tracing::warn!(product.id = %id, error = %error, "catalog unavailable; serving the last known product");
                        Ok(Fetched {
                            product,
                            stale: true,
                        })
                    }
                    None => Err(error),
                }
            }
            Err(other) => Err(other),
        }
    }

    async fn get_product(&self, cx: &CallContext, id: ProductId) -> Result<Product, CatalogError> {
        let builder = self
            .remote
            .request(cx, Method::GET, &format!("/products/{id}"));
        let product: Product = self.send(cx, true, builder, Some(id), None).await?;
        self.remember(&product);
        Ok(product)
    }

    async fn list_products(
        &self,
        cx: &CallContext,
        query: ListProducts,
    ) -> Result<Page<Product>, CatalogError> {
        let f = &query.filter;
        let mut params = vec![("limit", query.limit.get().to_string())];
        let optional = [
            (
                "cursor",
                query.cursor.as_ref().map(|c| c.as_str().to_owned()),
            ),
            ("sort", query.sort.map(|s| s.as_str().to_owned())),
            ("category_id", f.category_id.map(|c| c.to_string())),
            ("min_price", f.min_price.map(|p| p.to_string())),
            ("max_price", f.max_price.map(|p| p.to_string())),
            ("active", f.active.map(|a| a.to_string())),
            ("in_stock", f.in_stock.map(|a| a.to_string())),
            ("q", f.q.clone()),
        ];
        params.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        let builder = self
            .remote
            .request(cx, Method::GET, "/products")
            .query(&params);
        self.send(cx, true, builder, None, None).await
    }

    async fn update_product(
        &self,
        cx: &CallContext,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Product, CatalogError> {
        let builder = self
            .remote
            .request(cx, Method::PATCH, &format!("/products/{id}"))
            .json(&patch);
        self.send(cx, false, builder, Some(id), None).await
    }

    async fn create_category(
        &self,
        cx: &CallContext,
        new: NewCategory,
    ) -> Result<Category, CatalogError> {
        let builder = self
            .remote
            .request(cx, Method::POST, "/categories")
            .json(&new);
        self.send(cx, false, builder, None, Some(&new.slug)).await
    }

    async fn list_categories(&self, cx: &CallContext) -> Result<Vec<Category>, CatalogError> {
        self.send(
            cx,
            true,
            self.remote.request(cx, Method::GET, "/categories"),
            None,
            None,
        )
        .await
    }
}
