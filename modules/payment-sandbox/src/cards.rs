//! The sandbox's test card numbers, as at Stripe, and what the sandbox
//! answers for each of them.

use actix_web::http::StatusCode;

use crate::SLOW_ANSWER;

/// Authorizes (as at Stripe).
pub const SUCCEEDS: &str = "4242424242424242";
/// Declined: `card_declined` (as at Stripe).
pub const DECLINED: &str = "4000000000000002";
/// Declined: `insufficient_funds` (as at Stripe).
pub const INSUFFICIENT_FUNDS: &str = "4000000000009995";
/// The provider holds the request for [`super::SLOW_ANSWER`] before
/// answering: callers time out.
pub const TIMES_OUT: &str = "4000000000000259";
/// The provider answers 500 every time.
pub const SERVER_ERROR: &str = "4000000000000119";

/// The error status, code and message the sandbox answers instead of an
/// authorization for `card_number`; `None` for [`SUCCEEDS`]. The
/// [`TIMES_OUT`] card first waits [`SLOW_ANSWER`].
pub(crate) async fn refusal(card_number: &str) -> Option<(StatusCode, &'static str, &'static str)> {
    match card_number {
        SUCCEEDS => None,
        DECLINED => Some((
            StatusCode::PAYMENT_REQUIRED,
            "card_declined",
            "the card was declined",
        )),
        INSUFFICIENT_FUNDS => Some((
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_funds",
            "the card has insufficient funds",
        )),
        TIMES_OUT => {
            tokio::time::sleep(SLOW_ANSWER).await;
            Some((
                StatusCode::GATEWAY_TIMEOUT,
                "network_timeout",
                "the network did not answer",
            ))
        }
        SERVER_ERROR => Some((
            StatusCode::INTERNAL_SERVER_ERROR,
            "processing_error",
            "the sandbox failed, as configured for this card",
        )),
        _ => Some((
            StatusCode::PAYMENT_REQUIRED,
            "incorrect_number",
            "not a sandbox test card",
        )),
    }
}

/// The last four digits of a card number, the only part the sandbox keeps
/// with an authorization or answers.
pub(crate) fn last4(card_number: &str) -> String {
    card_number
        .get(card_number.len().saturating_sub(4)..)
        .unwrap_or_default()
        .to_owned()
}
