//! [`Observed`]: any [`PaymentApi`] with a span and RED metrics per call
//! (`kernel::observe`), the same whichever implementation it wraps.

use super::*;

kernel::observed!("payment", PaymentApi, PaymentError, {
    fn tokenize(request: Tokenize) -> PaymentMethod;
    fn authorize(request: AuthorizePayment) -> Payment;
    fn capture(order: OrderId) -> Payment;
    fn void(order: OrderId) -> Payment;
    fn refund(order: OrderId) -> Payment;
    fn payment_for_order(order: OrderId) -> Payment;
    fn payment(id: PaymentId) -> Payment;
});
