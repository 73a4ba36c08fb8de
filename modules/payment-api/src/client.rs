//! [`PaymentClient`]: `PaymentApi` over HTTP, for processes where payments are remote.

use kernel::{CallContext, Failure, OrderId};
use remote::{ModuleClient, RemoteError};
use reqwest::{Method, RequestBuilder};
use resilience::Policy;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use url::Url;

use crate::{
    AuthorizePayment, Payment, PaymentApi, PaymentError, PaymentId, PaymentMethod, Tokenize,
};

/// Talks to a payment module served by another process.
#[derive(Debug, Clone)]
pub struct PaymentClient {
    remote: ModuleClient,
}

impl PaymentClient {
    /// A client for the payment module served at `base`.
    pub fn new(http: reqwest::Client, base: Url, policy: Arc<Policy>) -> PaymentClient {
        PaymentClient {
            remote: ModuleClient::new(http, base, "payment", policy),
        }
    }

    /// Every call but tokenize is idempotent by order, so safe to retry.
    async fn send<T: DeserializeOwned>(
        &self,
        cx: &CallContext,
        idempotent: bool,
        builder: RequestBuilder,
    ) -> Result<T, PaymentError> {
        self.remote
            .send(cx, builder, idempotent)
            .await
            .map_err(|e| match e {
                RemoteError::Problem(problem) => PaymentError::from_problem(problem),
                RemoteError::Unavailable(reason) => {
                    PaymentError::Common(Failure::Unavailable(reason))
                }
                RemoteError::Degraded(d) => PaymentError::Common(Failure::Degraded(d)),
                RemoteError::Unexpected(reason) => {
                    PaymentError::Common(Failure::Unexpected(reason))
                }
            })
    }

    async fn step(
        &self,
        cx: &CallContext,
        order: OrderId,
        step: &str,
    ) -> Result<Payment, PaymentError> {
        let path = format!("/payments/orders/{order}/{step}");
        self.send(cx, true, self.remote.request(cx, Method::POST, &path))
            .await
    }
}

#[async_trait::async_trait]
impl PaymentApi for PaymentClient {
    async fn tokenize(
        &self,
        cx: &CallContext,
        request: Tokenize,
    ) -> Result<PaymentMethod, PaymentError> {
        let builder = self
            .remote
            .request(cx, Method::POST, "/payments/methods")
            .json(&request);
        // A repeated tokenization makes a second, unused token: harmless.
        self.send(cx, true, builder).await
    }

    async fn authorize(
        &self,
        cx: &CallContext,
        request: AuthorizePayment,
    ) -> Result<Payment, PaymentError> {
        let builder = self
            .remote
            .request(cx, Method::POST, "/payments/authorizations")
            .json(&request);
        self.send(cx, true, builder).await
    }

    async fn capture(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError> {
        self.step(cx, order, "capture").await
    }

    async fn void(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError> {
        self.step(cx, order, "void").await
    }

    async fn refund(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError> {
        self.step(cx, order, "refund").await
    }

    async fn payment_for_order(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Payment, PaymentError> {
        let path = format!("/payments/orders/{order}");
        self.send(cx, true, self.remote.request(cx, Method::GET, &path))
            .await
    }

    async fn payment(&self, cx: &CallContext, id: PaymentId) -> Result<Payment, PaymentError> {
        let path = format!("/payments/{id}");
        self.send(cx, true, self.remote.request(cx, Method::GET, &path))
            .await
    }
}
