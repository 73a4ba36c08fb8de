//! [`InventoryClient`]: `InventoryApi` over HTTP, for processes where the inventory is remote.

use catalog_api::Sku;
use kernel::{CallContext, Failure, Page};
use remote::{ModuleClient, RemoteError};
use reqwest::{Method, RequestBuilder};
use resilience::Policy;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use url::Url;

use crate::{
    Adjustment, InventoryApi, InventoryError, ListMovements, Movement, OrderId, Reservation,
    ReserveStock, StockLevel,
};

/// Talks to an inventory module served by another process.
#[derive(Debug, Clone)]
pub struct InventoryClient {
    remote: ModuleClient,
}

impl InventoryClient {
    /// A client for the inventory served at `base`.
    pub fn new(http: reqwest::Client, base: Url, policy: Arc<Policy>) -> InventoryClient {
        InventoryClient {
            remote: ModuleClient::new(http, base, "inventory", policy),
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        cx: &CallContext,
        idempotent: bool,
        builder: RequestBuilder,
        order: Option<OrderId>,
    ) -> Result<T, InventoryError> {
        self.remote
            .send(cx, builder, idempotent)
            .await
            .map_err(|e| match e {
                RemoteError::Problem(problem) => InventoryError::from_problem(problem, order),
                RemoteError::Unavailable(reason) => {
                    InventoryError::Common(Failure::Unavailable(reason))
                }
                RemoteError::Degraded(d) => InventoryError::Common(Failure::Degraded(d)),
                RemoteError::Unexpected(reason) => {
                    InventoryError::Common(Failure::Unexpected(reason))
                }
            })
    }
}

impl InventoryClient {
    /// `POST /inventory/reservations/{order}/{step}`: idempotent, so safe
    /// to retry.
    async fn step(
        &self,
        cx: &CallContext,
        order: OrderId,
        step: &str,
    ) -> Result<Reservation, InventoryError> {
        let path = format!("/inventory/reservations/{order}/{step}");
        self.send(
            cx,
            true,
            self.remote.request(cx, Method::POST, &path),
            Some(order),
        )
        .await
    }
}

#[async_trait::async_trait]
impl InventoryApi for InventoryClient {
    async fn stock(&self, cx: &CallContext, sku: &Sku) -> Result<StockLevel, InventoryError> {
        self.send(
            cx,
            true,
            self.remote
                .request(cx, Method::GET, &format!("/inventory/{sku}")),
            None,
        )
        .await
    }

    async fn adjust(
        &self,
        cx: &CallContext,
        sku: &Sku,
        adjustment: Adjustment,
    ) -> Result<StockLevel, InventoryError> {
        let mut builder = self
            .remote
            .request(cx, Method::POST, &format!("/inventory/{sku}/adjustments"))
            .json(&adjustment);
        // With a key the adjustment is made once however often it is sent
        // (a repeat is answered as a replay), so the policy may send it
        // again; without one, once.
        let keyed = match &adjustment.idempotency_key {
            Some(key) if !crate::valid_idempotency_key(key) => {
                return Err(InventoryError::InvalidIdempotencyKey);
            }
            Some(key) => {
                builder = builder.header("idempotency-key", key.as_str());
                true
            }
            None => false,
        };
        self.send(cx, keyed, builder, None).await
    }

    async fn movements(
        &self,
        cx: &CallContext,
        sku: &Sku,
        query: ListMovements,
    ) -> Result<Page<Movement>, InventoryError> {
        let mut params = vec![("limit", query.limit.get().to_string())];
        if let Some(cursor) = &query.cursor {
            params.push(("cursor", cursor.as_str().to_owned()));
        }
        let builder = self
            .remote
            .request(cx, Method::GET, &format!("/inventory/{sku}/movements"))
            .query(&params);
        self.send(cx, true, builder, None).await
    }

    async fn reserve(
        &self,
        cx: &CallContext,
        request: ReserveStock,
    ) -> Result<Reservation, InventoryError> {
        let order = request.order_id;
        let builder = self
            .remote
            .request(cx, Method::POST, "/inventory/reservations")
            .json(&request);
        self.send(cx, true, builder, Some(order)).await
    }

    async fn commit(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError> {
        self.step(cx, order, "commit").await
    }

    async fn release(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError> {
        self.step(cx, order, "release").await
    }

    async fn restock(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError> {
        self.step(cx, order, "restock").await
    }

    async fn reservation(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError> {
        let path = format!("/inventory/reservations/{order}");
        self.send(
            cx,
            true,
            self.remote.request(cx, Method::GET, &path),
            Some(order),
        )
        .await
    }
}
