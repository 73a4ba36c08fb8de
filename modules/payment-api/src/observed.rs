//! [`Observed`]: any [`PaymentApi`] with a span and RED metrics per call
//! (`kernel::observe`), the same whichever implementation it wraps.

use std::sync::Arc;

use super::*;

/// Wraps an implementation of [`PaymentApi`] so that every call is observed
/// under the module name `payment`.
pub struct Observed(pub Arc<dyn PaymentApi>);

#[async_trait::async_trait]
impl PaymentApi for Observed {
    async fn tokenize(
        &self,
        cx: &CallContext,
        request: Tokenize,
    ) -> Result<PaymentMethod, PaymentError> {
        kernel::observe::module_call("payment", "tokenize", self.0.tokenize(cx, request)).await
    }

    async fn authorize(
        &self,
        cx: &CallContext,
        request: AuthorizePayment,
    ) -> Result<Payment, PaymentError> {
        kernel::observe::module_call("payment", "authorize", self.0.authorize(cx, request)).await
    }

    async fn capture(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError> {
        kernel::observe::module_call("payment", "capture", self.0.capture(cx, order)).await
    }

    async fn void(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError> {
        kernel::observe::module_call("payment", "void", self.0.void(cx, order)).await
    }

    async fn refund(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError> {
        kernel::observe::module_call("payment", "refund", self.0.refund(cx, order)).await
    }

    async fn payment_for_order(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Payment, PaymentError> {
        kernel::observe::module_call(
            "payment",
            "payment_for_order",
            self.0.payment_for_order(cx, order),
        )
        .await
    }

    async fn payment(&self, cx: &CallContext, id: PaymentId) -> Result<Payment, PaymentError> {
        kernel::observe::module_call("payment", "payment", self.0.payment(cx, id)).await
    }
}
