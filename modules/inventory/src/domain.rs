//! The inventory's rules, free of storage: what a valid adjustment and
//! reservation are, where a reservation may move, and when a stock change
//! is worth a low- or out-of-stock signal ([`Alert`]: once per fall; the
//! stock moves keep it in their SQL, `repo::alert_set`).

use inventory_api::{
    Adjustment, InventoryError, ReservationLine, ReservationStatus, ReserveStock,
    valid_idempotency_key,
};
use kernel::{Failure, FieldError};

/// Most lines in one reservation.
const MAX_LINES: usize = 100;
/// Largest quantity of one line or adjustment.
const MAX_QUANTITY: i32 = 1_000_000;

/// What a caller asks of a reservation.
#[derive(Clone, Copy)]
pub(crate) enum Transition {
    /// Active → committed: a sale.
    Commit,
    /// Active → released: the stock back.
    Release,
    /// Committed → returned: the sale put back.
    Restock,
}

impl Transition {
    /// The state a reservation must be in to move, and the states that mean
    /// the move happened already (answered as they are: idempotent).
    pub(crate) fn states(self) -> (ReservationStatus, &'static [ReservationStatus]) {
        match self {
            Transition::Commit => (ReservationStatus::Active, &[ReservationStatus::Committed]),
            Transition::Release => (
                ReservationStatus::Active,
                &[ReservationStatus::Released, ReservationStatus::Expired],
            ),
            Transition::Restock => (ReservationStatus::Committed, &[ReservationStatus::Returned]),
        }
    }
}

/// The stock alert a SKU raised last (`stock.alerted`), kept so that each
/// is raised once per fall, not once per move: a SKU near its threshold
/// whose units were reserved, released (a declined card, an expiry) and
/// reserved again alerted the admins on every reserve, and its last unit
/// going round raised out of stock each time.
///
/// The rule, kept by every stock move in its `UPDATE` (`repo::alert_set`,
/// under the row's lock) over the units available after it:
/// - at zero: [`Alert::Out`], raising out of stock unless it was out
///   already; after low too: out of stock is news after low;
/// - at the threshold or below, above zero: [`Alert::Low`], raising low
///   stock if it was [`Alert::None`] (a fall from above the threshold, a
///   SKU received there for the first time, or a threshold raised to or
///   above what is available). [`Alert::Out`] stays out (units a release
///   gives back are no news, and taking them again is no new out of
///   stock), unless the move brought units in: then low, raising nothing,
///   and the next fall to zero is told again;
/// - above the threshold: [`Alert::None`] again, raising nothing, when the
///   move brought units in, so the next fall alerts again; after any other
///   move (a release, an expiry or a return giving back what a reserve or
///   a sale took, which undoes a fall told already) as it was, so a reserve after a
///   release alerts nothing.
///
/// Units are brought in by an adjustment (a receipt or the admins' count,
/// or a new threshold); a return of sold units (a cancelled order's
/// restock) undoes a sale, as a release undoes a reserve, and brings in
/// nothing new. With a threshold of
/// 0 nothing is low. Until units come in, a SKU whose released units took
/// it back above its threshold raises no second low stock when sales take
/// it down again: that fall was told once (out of stock still is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alert {
    /// Nothing raised since units last came in above the threshold (or
    /// ever).
    None,
    /// Low stock was raised.
    Low,
    /// Out of stock was raised.
    Out,
}

impl Alert {
    /// The alert of its stored name (`none`, `low`, `out`).
    pub(crate) fn parse(stored: &str) -> Option<Alert> {
        match stored {
            "none" => Some(Alert::None),
            "low" => Some(Alert::Low),
            "out" => Some(Alert::Out),
            _ => None,
        }
    }
}

/// A stock level crossing a line worth telling others about.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Crossing {
    /// Available fell to zero.
    OutOfStock,
    /// Available fell to the threshold or below (or a new SKU starts there).
    LowStock { available: i32, threshold: i32 },
}

/// What a move that `raised` an alert ([`Alert`]'s rule; [`Alert::None`]
/// when it raised none) announces, leaving `available` units with the
/// SKU's low-stock `threshold`.
pub(crate) fn crossing(raised: Alert, available: i32, threshold: i32) -> Option<Crossing> {
    match raised {
        Alert::None => None,
        Alert::Out => Some(Crossing::OutOfStock),
        Alert::Low => Some(Crossing::LowStock {
            available,
            threshold,
        }),
    }
}

/// Checks an adjustment against the contract's limits: its key first, as
/// `POST /orders` checks its key before the body.
pub(crate) fn check_adjustment(adjustment: &Adjustment) -> Result<(), InventoryError> {
    if (adjustment.idempotency_key.as_deref()).is_some_and(|key| !valid_idempotency_key(key)) {
        return Err(InventoryError::InvalidIdempotencyKey);
    }
    let mut errors = Vec::new();
    if adjustment.quantity == 0 || adjustment.quantity.unsigned_abs() > MAX_QUANTITY.unsigned_abs()
    {
        errors.push(FieldError::new(
            "quantity",
            format!("must be non-zero and at most {MAX_QUANTITY} either way"),
        ));
    }
    let reason = adjustment.reason.trim().chars().count();
    if reason == 0 || reason > 200 {
        errors.push(FieldError::new("reason", "must be 1 to 200 characters"));
    }
    if adjustment.low_stock_threshold.is_some_and(|t| t < 0) {
        errors.push(FieldError::new(
            "low_stock_threshold",
            "must not be negative",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(InventoryError::Common(Failure::Validation(errors)))
    }
}

/// Checks a reservation request; returns its lines sorted by SKU (the
/// order rows are locked in, so concurrent reservations cannot deadlock).
pub(crate) fn check_reservation(
    request: &ReserveStock,
) -> Result<Vec<ReservationLine>, InventoryError> {
    let mut errors = Vec::new();
    if request.lines.is_empty() || request.lines.len() > MAX_LINES {
        errors.push(FieldError::new(
            "lines",
            format!("must hold 1 to {MAX_LINES} lines"),
        ));
    }
    for (i, line) in request.lines.iter().enumerate() {
        if line.quantity < 1 || line.quantity > MAX_QUANTITY {
            errors.push(FieldError::new(
                format!("lines[{i}].quantity"),
                format!("must be 1 to {MAX_QUANTITY}"),
            ));
        }
    }
    let mut lines = request.lines.clone();
    lines.sort_by(|a, b| a.sku.as_str().cmp(b.sku.as_str()));
    if lines.windows(2).any(|w| w[0].sku == w[1].sku) {
        errors.push(FieldError::new("lines", "name each SKU once"));
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(InventoryError::Common(Failure::Validation(errors)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_alert_is_announced_and_no_other() {
        assert_eq!(crossing(Alert::Out, 0, 5), Some(Crossing::OutOfStock));
        assert_eq!(
            crossing(Alert::Low, 4, 5),
            Some(Crossing::LowStock {
                available: 4,
                threshold: 5,
            })
        );
        assert_eq!(crossing(Alert::None, 4, 5), None, "kept, not raised");
        for stored in ["none", "low", "out"] {
            assert!(Alert::parse(stored).is_some(), "{stored}");
        }
        assert_eq!(Alert::parse("LOW"), None);
    }

    #[test]
    fn an_adjustment_is_bounded_either_way_even_at_the_edge_of_i32() {
        let adjustment = |quantity| Adjustment {
            quantity,
            reason: "count".to_owned(),
            low_stock_threshold: None,
            idempotency_key: None,
        };
        for quantity in [0, i32::MIN, i32::MAX, MAX_QUANTITY + 1, -MAX_QUANTITY - 1] {
            assert!(
                check_adjustment(&adjustment(quantity)).is_err(),
                "{quantity}"
            );
        }
        for quantity in [1, -1, MAX_QUANTITY, -MAX_QUANTITY] {
            assert!(
                check_adjustment(&adjustment(quantity)).is_ok(),
                "{quantity}"
            );
        }
    }

    #[test]
    fn an_idempotency_key_is_1_to_255_visible_ascii_characters_as_for_orders() {
        let keyed = |key: &str| Adjustment {
            quantity: 1,
            reason: "receive".to_owned(),
            low_stock_threshold: None,
            idempotency_key: Some(key.to_owned()),
        };
        let (longest, too_long) = ("k".repeat(255), "k".repeat(256));
        for key in [
            "a",
            "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "!~",
            longest.as_str(),
        ] {
            assert_eq!(check_adjustment(&keyed(key)), Ok(()), "{key}");
        }
        for key in ["", " ", "a b", "a\n", "caf\u{e9}", too_long.as_str()] {
            assert_eq!(
                check_adjustment(&keyed(key)),
                Err(InventoryError::InvalidIdempotencyKey),
                "{key:?}"
            );
        }
    }

    #[test]
    fn a_reservation_names_each_sku_once_and_comes_back_sorted() {
        let line = |sku: &str, quantity| ReservationLine {
            sku: catalog_api::Sku::parse(sku).unwrap(),
            quantity,
        };
        let request = |lines| ReserveStock {
            order_id: inventory_api::OrderId::from(uuid::Uuid::nil()),
            lines,
        };
        let sorted = check_reservation(&request(vec![line("B-1", 1), line("A-1", 2)])).unwrap();
        assert_eq!(sorted, vec![line("A-1", 2), line("B-1", 1)]);
        assert!(check_reservation(&request(vec![line("A-1", 1), line("A-1", 1)])).is_err());
        assert!(check_reservation(&request(vec![line("A-1", 0)])).is_err());
        assert!(check_reservation(&request(vec![])).is_err());
    }
}
