//! The payment module's rules, free of storage and of the provider: what a
//! card number and an authorization request must be, and the key that
//! makes an authorization idempotent at the provider.

use kernel::{Failure, FieldError, OrderId};
use payment_api::{AuthorizePayment, PaymentError, PaymentStatus};

/// What the provider knows a payment by: its authorization (once there is
/// one) and the card's token. Never leaves this module.
pub(crate) struct AtProvider {
    pub(crate) reference: Option<String>,
    pub(crate) method: String,
}

impl AtProvider {
    /// The provider's authorization id; a payment without one was never
    /// authorized.
    pub(crate) fn authorization(&self) -> Result<&str, PaymentError> {
        self.reference
            .as_deref()
            .ok_or(PaymentError::InvalidTransition(PaymentStatus::Authorizing))
    }
}

/// The provider's idempotency key of an order's authorization: asking
/// again after a crash or a timeout answers the same authorization.
pub(crate) fn authorization_key(order: OrderId) -> String {
    format!("shop-order-{order}-authorize")
}

/// The digits of a card number written with spaces or dashes.
pub(crate) fn card_digits(number: &str) -> Result<String, PaymentError> {
    let digits: String = number.chars().filter(|c| *c != ' ' && *c != '-').collect();
    if (12..=19).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits)
    } else {
        Err(PaymentError::Common(Failure::Validation(vec![
            FieldError::new("card_number", "must be 12 to 19 digits"),
        ])))
    }
}

/// Checks an authorization request against the contract's limits.
pub(crate) fn check_authorization(request: &AuthorizePayment) -> Result<(), PaymentError> {
    let mut errors = Vec::new();
    if request.amount.amount_minor() <= 0 {
        errors.push(FieldError::new("amount", "must be positive"));
    }
    let last4 = &request.payment_method.card_last4;
    if last4.len() != 4 || !last4.bytes().all(|b| b.is_ascii_digit()) {
        errors.push(FieldError::new(
            "payment_method.card_last4",
            "must be 4 digits",
        ));
    }
    let token = request.payment_method.token.chars().count();
    if token == 0 || token > 255 {
        errors.push(FieldError::new(
            "payment_method.token",
            "must be 1 to 255 characters",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PaymentError::Common(Failure::Validation(errors)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_keep_their_digits_only() {
        assert_eq!(
            card_digits("4242 4242-4242 4242").ok().as_deref(),
            Some("4242424242424242")
        );
        assert!(card_digits("4242").is_err());
        assert!(card_digits("4242 4242 4242 424x").is_err());
        assert!(card_digits(&"4".repeat(20)).is_err());
    }
}
