//! The calls a step makes to the inventory and payment modules, and how
//! their answers map to the saga's outcomes (done, failed for good, retry).

use inventory_api::{InventoryError, ReservationLine, ReservationStatus, ReserveStock};
use kernel::CallContext;
use payment_api::{AuthorizePayment, PaymentError, PaymentMethod, PaymentStatus};

use super::Saga;
use super::step::{Outcome, Step, inventory_again, inventory_retry, payment_again, payment_retry};
use crate::domain::{OrderEvent, OrderState};
use crate::repo::SagaRow;

impl Saga {
    /// Runs `step`'s call for the order in `state`.
    pub(super) async fn call(
        &self,
        step: Step,
        state: &OrderState,
        saga: &SagaRow,
        cx: &CallContext,
    ) -> Outcome {
        let order = state.order.id;
        let inventory = &self.inventory;
        let payment = &self.payment;
        match step {
            Step::Reserve => {
                let lines = state
                    .order
                    .lines
                    .iter()
                    .map(|l| ReservationLine {
                        sku: l.sku.clone(),
                        quantity: l.quantity,
                    })
                    .collect();
                match inventory
                    .reserve(
                        cx,
                        ReserveStock {
                            order_id: order,
                            lines,
                        },
                    )
                    .await
                {
                    Ok(_) => Outcome::Done(OrderEvent::StockReserved),
                    Err(InventoryError::InsufficientStock(skus)) => {
                        Outcome::Failed(format!("insufficient stock for {}", skus.join(", ")))
                    }
                    Err(e) if inventory_retry(&e) => inventory_again(&e),
                    Err(e) => Outcome::Failed(format!("the stock could not be reserved: {e}")),
                }
            }
            Step::Authorize => {
                let request = AuthorizePayment {
                    order_id: order,
                    customer_id: state.order.customer_id,
                    amount: state.order.total,
                    payment_method: PaymentMethod {
                        token: saga.payment_method.clone(),
                        card_last4: saga.card_last4.clone(),
                    },
                };
                match payment.authorize(cx, request).await {
                    Ok(p) => Outcome::Done(OrderEvent::PaymentAuthorized {
                        payment_id: p.id.as_uuid(),
                    }),
                    Err(PaymentError::Declined(code)) => {
                        Outcome::Failed(format!("the card was declined ({code})"))
                    }
                    Err(e) if payment_retry(&e) => payment_again(&e),
                    Err(e) => Outcome::Failed(format!("the payment failed: {e}")),
                }
            }
            Step::Commit => match inventory.commit(cx, order).await {
                Ok(_) => Outcome::Done(OrderEvent::StockCommitted),
                Err(e) if inventory_retry(&e) => inventory_again(&e),
                Err(e) => Outcome::Failed(format!("the stock could not be committed: {e}")),
            },
            Step::Capture => match payment.capture(cx, order).await {
                Ok(_) => Outcome::Done(OrderEvent::PaymentCaptured),
                Err(e) if payment_retry(&e) => payment_again(&e),
                Err(e) => Outcome::Failed(format!("the payment could not be captured: {e}")),
            },
            Step::Refund => match payment.refund(cx, order).await {
                Ok(_) => Outcome::Done(OrderEvent::PaymentRefunded),
                Err(e) if payment_retry(&e) => payment_again(&e),
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Step::Void => match payment.void(cx, order).await {
                Ok(p) if matches!(p.status, PaymentStatus::Voided | PaymentStatus::Declined) => {
                    Outcome::Done(OrderEvent::PaymentVoided)
                }
                // Answered as anything else (a payment module of older
                // code, which could answer a hold it had just failed to
                // give up): not done, asked again.
                Ok(p) => Outcome::Retry(format!(
                    "the void answered a payment still {}",
                    p.status.as_str()
                )),
                // The flag is set with the order: a payment may never have
                // been asked for (the stock ran out first, or a cancel).
                Err(PaymentError::NotFound) if !state.authorized => Outcome::NoPayment,
                Err(PaymentError::NotFound) => Outcome::Done(OrderEvent::PaymentVoided),
                // Captured after all (the capture's record was lost): refund.
                Err(PaymentError::InvalidTransition(PaymentStatus::Captured)) => {
                    match payment.refund(cx, order).await {
                        Ok(_) => Outcome::Done(OrderEvent::PaymentRefunded),
                        Err(e) if payment_retry(&e) => payment_again(&e),
                        Err(e) => Outcome::Failed(e.to_string()),
                    }
                }
                Err(PaymentError::InvalidTransition(PaymentStatus::Refunded)) => {
                    Outcome::Done(OrderEvent::PaymentRefunded)
                }
                Err(e) if payment_retry(&e) => payment_again(&e),
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Step::Restock => match inventory.restock(cx, order).await {
                Ok(_) => Outcome::Done(OrderEvent::StockRestocked),
                Err(e) if inventory_retry(&e) => inventory_again(&e),
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Step::Release => match inventory.release(cx, order).await {
                Ok(_) | Err(InventoryError::ReservationNotFound(_)) => {
                    Outcome::Done(OrderEvent::StockReleased)
                }
                // Committed after all (the commit's record was lost): restock.
                Err(InventoryError::InvalidTransition {
                    status: ReservationStatus::Committed,
                    ..
                }) => match inventory.restock(cx, order).await {
                    Ok(_) => Outcome::Done(OrderEvent::StockRestocked),
                    Err(e) if inventory_retry(&e) => inventory_again(&e),
                    Err(e) => Outcome::Failed(e.to_string()),
                },
                Err(InventoryError::InvalidTransition {
                    status: ReservationStatus::Returned,
                    ..
                }) => Outcome::Done(OrderEvent::StockRestocked),
                Err(e) if inventory_retry(&e) => inventory_again(&e),
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Step::Confirm | Step::Close => Outcome::Retry("not a call".into()),
        }
    }
}
