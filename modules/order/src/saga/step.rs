//! The saga's steps and the rule that picks the next one from what is
//! recorded: the saga's decisions, free of calls and of storage.

use inventory_api::InventoryError;
use payment_api::PaymentError;

use crate::domain::OrderEvent;
use crate::domain::OrderState;
use crate::repo::{Direction, SagaRow};
use kernel::Failure;

/// What the next move is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Reserve,
    Authorize,
    Commit,
    Capture,
    Confirm,
    Refund,
    Void,
    Restock,
    Release,
    Close,
}

impl Step {
    pub(super) fn name(self) -> &'static str {
        match self {
            Step::Reserve => "reserve",
            Step::Authorize => "authorize",
            Step::Commit => "commit",
            Step::Capture => "capture",
            Step::Confirm => "confirm",
            Step::Refund => "refund",
            Step::Void => "void",
            Step::Restock => "restock",
            Step::Release => "release",
            Step::Close => "close",
        }
    }

    /// What the step calls, in words for the customer.
    pub(super) fn dependency(self) -> &'static str {
        match self {
            Step::Reserve | Step::Commit | Step::Restock | Step::Release => "inventory",
            Step::Authorize | Step::Capture | Step::Refund | Step::Void => "payment provider",
            Step::Confirm | Step::Close => "order service",
        }
    }

    /// The step named `name` (as [`Step::name`] writes it).
    pub(super) fn parse(name: &str) -> Option<Step> {
        [
            Step::Reserve,
            Step::Authorize,
            Step::Commit,
            Step::Capture,
            Step::Confirm,
            Step::Refund,
            Step::Void,
            Step::Restock,
            Step::Release,
            Step::Close,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Marks the step begun on a saga held in memory.
    pub(super) fn mark(self, saga: &mut SagaRow) {
        saga.step = Some(self.name().to_owned());
    }
}

/// How a run of the saga ended.
pub(super) enum Ran {
    /// Over for now: finished, or the lease is another instance's.
    Over,
    /// Finished by this run: the order as its last step committed it.
    Finished(Box<OrderState>),
    /// A step must be tried again later, for this reason.
    Retry(String),
    /// A step was refused the shop's own identity ([`Outcome::Refused`]):
    /// tried again later, the attempt not counted.
    Refused(String),
}

/// How a step call ended.
pub(super) enum Outcome {
    /// Record this event.
    Done(OrderEvent),
    /// Nothing to undo: the void found no payment (none was ever asked
    /// for). No event; the saga's `payment_attempted` is cleared in memory
    /// (a run after a crash asks again, and is answered the same).
    NoPayment,
    /// The step failed for good: turn back (forward) with this reason.
    Failed(String),
    /// Could not tell or not now: try again later.
    Retry(String),
    /// The callee refused the shop's own identity (a service key or a clock
    /// out of step, as during a key rotation): the deployment's fault, which
    /// its operators mend. Asked again every `retry_max_ms`, counting no
    /// attempt, never given up: the customer's order does not fail for it.
    Refused(String),
}

/// The step the recorded state and saga call for; `None` once done.
pub(super) fn next_step(state: &OrderState, saga: &SagaRow) -> Option<Step> {
    if saga.done {
        return None;
    }
    if saga.direction == Direction::Forward {
        return Some(if !state.reserved {
            Step::Reserve
        } else if !state.authorized {
            Step::Authorize
        } else if !state.committed {
            Step::Commit
        } else if !state.captured {
            Step::Capture
        } else {
            Step::Confirm
        });
    }
    Some(if state.captured && !state.refunded {
        Step::Refund
    } else if (state.authorized || saga.payment_attempted)
        && !state.captured
        && !state.voided
        && !state.refunded
    {
        // Refunded already: a void that found the payment captured (its
        // capture's record was lost) refunded it instead, and that ends the
        // payment's side as a void would.
        Step::Void
    } else if state.committed && !state.restocked {
        Step::Restock
    } else if (state.reserved || saga.reserve_attempted)
        && !state.committed
        && !state.released
        && !state.restocked
    {
        Step::Release
    } else {
        Step::Close
    })
}

/// Whether the inventory's answer is worth asking again (it may change).
pub(super) fn inventory_retry(error: &InventoryError) -> bool {
    matches!(error, InventoryError::Common(failure) if worth_asking_again(failure))
}

/// Whether the payment module's answer is worth asking again.
pub(super) fn payment_retry(error: &PaymentError) -> bool {
    matches!(error, PaymentError::Common(failure) if worth_asking_again(failure))
}

/// What an inventory answer worth asking again ([`inventory_retry`]) leads to.
pub(super) fn inventory_again(error: &InventoryError) -> Outcome {
    match error {
        InventoryError::Common(failure) if identity_refused(failure) => {
            Outcome::Refused(error.to_string())
        }
        _ => Outcome::Retry(error.to_string()),
    }
}

/// What a payment answer worth asking again ([`payment_retry`]) leads to.
pub(super) fn payment_again(error: &PaymentError) -> Outcome {
    match error {
        PaymentError::Common(failure) if identity_refused(failure) => {
            Outcome::Refused(error.to_string())
        }
        _ => Outcome::Retry(error.to_string()),
    }
}

fn identity_refused(failure: &Failure) -> bool {
    matches!(failure, Failure::Unauthenticated | Failure::Forbidden)
}

/// A failure that says nothing about the order: the callee could not
/// answer ([`Failure::is_transient`]), or refused the shop's own identity
/// (in another process, a service key or a clock out of step with this
/// one's, as during a key rotation: the deployment's fault, which its
/// operators mend, never a reason to fail the customer's order). In
/// process the calls carry the service caller itself and are never refused.
fn worth_asking_again(failure: &Failure) -> bool {
    failure.is_transient() || identity_refused(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderEvent;
    use chrono::Utc;
    use kernel::{Currency, Money, OrderId};
    use uuid::Uuid;

    fn compensating() -> SagaRow {
        SagaRow {
            direction: Direction::Compensate,
            outcome: None,
            reason: None,
            payment_method: "pm_test".into(),
            card_last4: "4242".into(),
            reserve_attempted: true,
            payment_attempted: true,
            request_id: None,
            done: false,
            attempts: 0,
            step: None,
        }
    }

    /// The order's events so far folded into its state.
    fn state_after(events: &[OrderEvent]) -> OrderState {
        let now = Utc::now();
        let placed = OrderEvent::Placed {
            customer_id: Uuid::now_v7(),
            lines: vec![],
            total: Money::new(1000, Currency::EUR),
            card_last4: "4242".into(),
        };
        let mut state = OrderState::start(OrderId::generate(), &placed, now).unwrap();
        for event in events {
            state.apply(event, now);
        }
        state
    }

    /// A capture whose record was lost (a crash after it, then a cancel):
    /// the void finds the payment captured and refunds it. The payment's
    /// side is then over; the stock is next, never the void again (which
    /// would be answered `refunded` and recorded as nothing, for ever).
    #[test]
    fn a_void_that_refunded_is_not_asked_again() {
        let state = state_after(&[
            OrderEvent::StockReserved,
            OrderEvent::PaymentAuthorized {
                payment_id: Uuid::now_v7(),
            },
            OrderEvent::StockCommitted,
            OrderEvent::PaymentRefunded,
        ]);
        assert_eq!(next_step(&state, &compensating()), Some(Step::Restock));
        let unreserved = state_after(&[OrderEvent::PaymentRefunded]);
        assert_eq!(next_step(&unreserved, &compensating()), Some(Step::Release));
        let nothing_yet = state_after(&[]);
        assert_eq!(next_step(&nothing_yet, &compensating()), Some(Step::Void));
    }
}
