//! [`PaymentModule`]: the in-process implementation of [`PaymentApi`].
//!
//! A payment is one row per order, moved by conditional `UPDATE`s
//! (`WHERE status = <expected>`), each with its ledger line in the same
//! transaction; a step repeated (a retry, a resumed saga, two racing
//! callers) finds the row already moved and changes nothing. The provider
//! is called outside any transaction, with a key derived from the order, so
//! asking again after a crash answers the same authorization.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use db::{Pool, PoolError};
use diesel::OptionalExtension as _;
use diesel::QueryableByName;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kernel::{CallContext, Currency, FieldError, Money, OrderId};
use payment_api::{
    AuthorizePayment, LedgerEntry, Payment, PaymentApi, PaymentError, PaymentId, PaymentMethod,
    PaymentStatus, Tokenize,
};
use uuid::Uuid;

use crate::provider::{PaymentProvider, ProviderError};

/// What the provider knows a payment by: its authorization (once there is
/// one) and the card's token. Never leaves this module.
struct AtProvider {
    reference: Option<String>,
    method: String,
}

impl AtProvider {
    /// The provider's authorization id; a payment without one was never
    /// authorized.
    fn authorization(&self) -> Result<&str, PaymentError> {
        self.reference
            .as_deref()
            .ok_or(PaymentError::InvalidTransition(PaymentStatus::Authorizing))
    }
}

/// Payments, served from this process's database pool.
#[derive(Clone)]
pub struct PaymentModule {
    pool: Pool,
    provider: Arc<dyn PaymentProvider>,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    order_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    customer_id: Uuid,
    #[diesel(sql_type = BigInt)]
    amount_minor: i64,
    #[diesel(sql_type = Text)]
    currency: String,
    #[diesel(sql_type = Text)]
    card_last4: String,
    #[diesel(sql_type = Text)]
    payment_method: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    provider_ref: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    decline_code: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

/// A payment moved by [`PaymentModule::record`], with its new ledger line
/// (absent when the line existed already).
#[derive(QueryableByName)]
struct Moved {
    #[diesel(embed)]
    payment: Row,
    #[diesel(sql_type = Nullable<Text>)]
    line_kind: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    line_amount_minor: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    line_currency: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    line_reason: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    line_created_at: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct LedgerRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = BigInt)]
    amount_minor: i64,
    #[diesel(sql_type = Text)]
    currency: String,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, order_id, customer_id, amount_minor, currency, card_last4, \
     payment_method, status, provider_ref, decline_code, created_at";

fn unavailable(error: PoolError) -> PaymentError {
    tracing::warn!(error = %error, "payment database unavailable");
    PaymentError::Unavailable("the payment database is unavailable".to_owned())
}

fn database(error: DieselError) -> PaymentError {
    match db::unavailable_reason(&error) {
        Some(reason) => PaymentError::Unavailable(format!("the payment database {reason}")),
        None => PaymentError::Unexpected(format!("payment database error: {error}")),
    }
}

fn provider_error(error: ProviderError) -> PaymentError {
    match error {
        ProviderError::Declined { code } | ProviderError::Rejected { code } => {
            PaymentError::Declined(code)
        }
        ProviderError::Unavailable(reason) => PaymentError::Unavailable(reason),
        ProviderError::Degraded(d) => PaymentError::Degraded(d),
    }
}

fn require_service(cx: &CallContext) -> Result<(), PaymentError> {
    match cx.caller() {
        None => Err(PaymentError::Unauthenticated),
        Some(c) if !c.is_admin_or_service() => Err(PaymentError::Forbidden),
        Some(_) => Ok(()),
    }
}

/// The provider's idempotency key of an order's authorization.
fn authorization_key(order: OrderId) -> String {
    format!("shop-order-{order}-authorize")
}

fn card_digits(number: &str) -> Result<String, PaymentError> {
    let digits: String = number.chars().filter(|c| *c != ' ' && *c != '-').collect();
    if (12..=19).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits)
    } else {
        Err(PaymentError::Validation(vec![FieldError::new(
            "card_number",
            "must be 12 to 19 digits",
        )]))
    }
}

impl PaymentModule {
    /// Payments over `pool`, taken through `provider`.
    pub fn new(pool: Pool, provider: Arc<dyn PaymentProvider>) -> PaymentModule {
        PaymentModule { pool, provider }
    }

    async fn conn(&self) -> Result<db::Object, PaymentError> {
        db::connection(&self.pool, crate::NAME)
            .await
            .map_err(unavailable)
    }

    async fn load(
        conn: &mut AsyncPgConnection,
        filter: &str,
        id: Uuid,
    ) -> Result<Option<(Payment, AtProvider)>, PaymentError> {
        let row: Option<Row> = db::sql(format!(
            "SELECT {COLUMNS} FROM payments WHERE {filter} = $1"
        ))
        .bind::<SqlUuid, _>(id)
        .get_result(conn)
        .await
        .optional()
        .map_err(database)?;
        let Some(row) = row else { return Ok(None) };
        let ledger: Vec<LedgerRow> = db::sql(
            "SELECT kind, amount_minor, currency, reason, created_at FROM ledger \
             WHERE payment_id = $1 ORDER BY id",
        )
        .bind::<SqlUuid, _>(row.id)
        .load(conn)
        .await
        .map_err(database)?;
        let at_provider = AtProvider {
            reference: row.provider_ref.clone(),
            method: row.payment_method.clone(),
        };
        Ok(Some((to_payment(row, ledger)?, at_provider)))
    }

    async fn by_order(&self, order: OrderId) -> Result<Payment, PaymentError> {
        Ok(self.with_provider_side(order).await?.0)
    }

    /// The payment of `order` and what the provider knows it by.
    async fn with_provider_side(
        &self,
        order: OrderId,
    ) -> Result<(Payment, AtProvider), PaymentError> {
        let mut conn = self.conn().await?;
        Self::load(&mut conn, "order_id", order.as_uuid())
            .await?
            .ok_or(PaymentError::NotFound)
    }

    /// Moves `payment` from `from` to `to` and writes the ledger line, once:
    /// a second caller finds it moved already (and gets it as it is now).
    async fn record(
        &self,
        payment: &Payment,
        from: PaymentStatus,
        to: PaymentStatus,
        provider_ref: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Payment, PaymentError> {
        let order = payment.order_id;
        let mut conn = self.conn().await?;
        // One statement: the move and its ledger line (no transaction round
        // trips; the line's foreign key sees the moved row).
        let moved: Option<Moved> = db::sql(format!(
            "WITH moved AS (UPDATE payments SET status = $2, provider_ref = COALESCE($3, provider_ref), \
             decline_code = COALESCE($4, decline_code), updated_at = now() \
             WHERE order_id = $1 AND status = $5 RETURNING {COLUMNS}), \
             line AS (INSERT INTO ledger (payment_id, kind, amount_minor, currency, reason, provider_ref) \
             SELECT id, $2, amount_minor, currency, $4, provider_ref FROM moved \
             ON CONFLICT ON CONSTRAINT ledger_once DO NOTHING \
             RETURNING kind AS line_kind, amount_minor AS line_amount_minor, currency AS line_currency, \
             reason AS line_reason, created_at AS line_created_at) \
             SELECT moved.*, line.* FROM moved LEFT JOIN line ON true"
        ))
        .bind::<SqlUuid, _>(order.as_uuid())
        .bind::<Text, _>(to.as_str())
        .bind::<Nullable<Text>, _>(provider_ref)
        .bind::<Nullable<Text>, _>(reason)
        .bind::<Text, _>(from.as_str())
        .get_result(&mut conn)
        .await
        .optional()
        .map_err(database)?;
        let moved = moved.and_then(|m| {
            metrics::counter!("payment_steps_total", "step" => to.as_str()).increment(1);
            let line = LedgerRow {
                kind: m.line_kind?,
                amount_minor: m.line_amount_minor?,
                currency: m.line_currency?,
                reason: m.line_reason,
                created_at: m.line_created_at?,
            };
            Some((m.payment, line))
        });
        match moved {
            // Moved here: the payment as it was, with its new line.
            Some((row, line)) => {
                let mut moved = to_payment(row, vec![line])?;
                let mut ledger = payment.ledger.clone();
                ledger.append(&mut moved.ledger);
                moved.ledger = ledger;
                Ok(moved)
            }
            None => self.by_order(order).await,
        }
    }

    /// Asks the provider for the authorization of a payment still
    /// `authorizing` (first time, or again after a crash or a timeout: the
    /// key is the same, so the provider answers the same authorization).
    async fn settle(&self, payment: &Payment, method: &str) -> Result<Payment, PaymentError> {
        let key = authorization_key(payment.order_id);
        match self.provider.authorize(&key, payment.amount, method).await {
            Ok(authorization) => {
                self.record(
                    payment,
                    PaymentStatus::Authorizing,
                    PaymentStatus::Authorized,
                    Some(&authorization.id),
                    None,
                )
                .await
            }
            Err(ProviderError::Declined { code } | ProviderError::Rejected { code }) => {
                self.record(
                    payment,
                    PaymentStatus::Authorizing,
                    PaymentStatus::Declined,
                    None,
                    Some(&code),
                )
                .await?;
                Err(PaymentError::Declined(code))
            }
            Err(e) => Err(provider_error(e)),
        }
    }
}

fn to_payment(row: Row, ledger: Vec<LedgerRow>) -> Result<Payment, PaymentError> {
    let money = |minor: i64, currency: &str| {
        currency
            .parse::<Currency>()
            .map(|c| Money::new(minor, c))
            .map_err(|e| PaymentError::Unexpected(format!("stored currency: {e}")))
    };
    Ok(Payment {
        id: PaymentId::from(row.id),
        order_id: OrderId::from(row.order_id),
        customer_id: row.customer_id,
        amount: money(row.amount_minor, &row.currency)?,
        status: row.status.parse().map_err(PaymentError::Unexpected)?,
        card_last4: row.card_last4,
        decline_code: row.decline_code,
        ledger: ledger
            .into_iter()
            .map(|l| {
                Ok(LedgerEntry {
                    amount: money(l.amount_minor, &l.currency)?,
                    kind: l.kind,
                    reason: l.reason,
                    at: l.created_at,
                })
            })
            .collect::<Result<_, PaymentError>>()?,
        created_at: row.created_at,
    })
}

#[async_trait::async_trait]
impl PaymentApi for PaymentModule {
    async fn tokenize(
        &self,
        cx: &CallContext,
        request: Tokenize,
    ) -> Result<PaymentMethod, PaymentError> {
        require_service(cx)?;
        let digits = card_digits(&request.card_number)?;
        let method = self
            .provider
            .tokenize(&digits)
            .await
            .map_err(provider_error)?;
        Ok(PaymentMethod {
            token: method.id,
            card_last4: method.card_last4,
        })
    }

    async fn authorize(
        &self,
        cx: &CallContext,
        request: AuthorizePayment,
    ) -> Result<Payment, PaymentError> {
        require_service(cx)?;
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
        if !errors.is_empty() {
            return Err(PaymentError::Validation(errors));
        }
        let order = request.order_id;
        let inserted: Option<Row> = {
            let mut conn = self.conn().await?;
            db::sql(format!(
                "INSERT INTO payments (id, order_id, customer_id, amount_minor, currency, payment_method, \
                 card_last4, status) VALUES ($1, $2, $3, $4, $5, $6, $7, 'authorizing') \
                 ON CONFLICT (order_id) DO NOTHING RETURNING {COLUMNS}"
            ))
            .bind::<SqlUuid, _>(PaymentId::generate().as_uuid())
            .bind::<SqlUuid, _>(order.as_uuid())
            .bind::<SqlUuid, _>(request.customer_id)
            .bind::<BigInt, _>(request.amount.amount_minor())
            .bind::<Text, _>(request.amount.currency().as_str())
            .bind::<Text, _>(&request.payment_method.token)
            .bind::<Text, _>(last4)
            .get_result(&mut conn)
            .await
            .optional()
            .map_err(database)?
        };
        let payment = match inserted {
            Some(row) => to_payment(row, Vec::new())?,
            None => self.by_order(order).await?,
        };
        if payment.amount != request.amount || payment.customer_id != request.customer_id {
            return Err(PaymentError::Conflict);
        }
        match payment.status {
            PaymentStatus::Authorizing => {
                self.settle(&payment, &request.payment_method.token).await
            }
            PaymentStatus::Declined => Err(PaymentError::Declined(
                payment.decline_code.unwrap_or_default(),
            )),
            PaymentStatus::Authorized | PaymentStatus::Captured => Ok(payment),
            // Voided (perhaps abandoned) or refunded: never again.
            other => Err(PaymentError::InvalidTransition(other)),
        }
    }

    async fn capture(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError> {
        require_service(cx)?;
        let (payment, at_provider) = self.with_provider_side(order).await?;
        match payment.status {
            PaymentStatus::Captured => Ok(payment),
            PaymentStatus::Authorized => {
                self.provider
                    .capture(at_provider.authorization()?)
                    .await
                    .map_err(provider_error)?;
                self.record(
                    &payment,
                    PaymentStatus::Authorized,
                    PaymentStatus::Captured,
                    None,
                    None,
                )
                .await
            }
            other => Err(PaymentError::InvalidTransition(other)),
        }
    }

    async fn void(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError> {
        require_service(cx)?;
        let (mut payment, mut at_provider) = self.with_provider_side(order).await?;
        if payment.status == PaymentStatus::Authorizing {
            // The outcome of the authorization is unknown: learn it first
            // (the provider replays it by key), so no hold is left behind.
            match self.settle(&payment, &at_provider.method).await {
                Ok(_) | Err(PaymentError::Declined(_)) => {}
                Err(e) if e.is_transient() => {
                    // Still no answer: the authorization is abandoned. If
                    // the provider made one, it is never captured (this
                    // payment can no longer be authorized or captured), and
                    // card networks release uncaptured holds by themselves.
                    tracing::warn!(order.id = %order, error = %e, "authorization outcome unknown; abandoned");
                    return self
                        .record(
                            &payment,
                            PaymentStatus::Authorizing,
                            PaymentStatus::Voided,
                            None,
                            Some("authorization_outcome_unknown"),
                        )
                        .await;
                }
                Err(e) => return Err(e),
            }
            (payment, at_provider) = self.with_provider_side(order).await?;
        }
        match payment.status {
            PaymentStatus::Voided | PaymentStatus::Declined => Ok(payment),
            PaymentStatus::Authorized => {
                self.provider
                    .void(at_provider.authorization()?)
                    .await
                    .map_err(provider_error)?;
                self.record(
                    &payment,
                    PaymentStatus::Authorized,
                    PaymentStatus::Voided,
                    None,
                    None,
                )
                .await
            }
            other => Err(PaymentError::InvalidTransition(other)),
        }
    }

    async fn refund(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError> {
        require_service(cx)?;
        let (payment, at_provider) = self.with_provider_side(order).await?;
        match payment.status {
            PaymentStatus::Refunded => Ok(payment),
            PaymentStatus::Captured => {
                self.provider
                    .refund(at_provider.authorization()?)
                    .await
                    .map_err(provider_error)?;
                self.record(
                    &payment,
                    PaymentStatus::Captured,
                    PaymentStatus::Refunded,
                    None,
                    None,
                )
                .await
            }
            other => Err(PaymentError::InvalidTransition(other)),
        }
    }

    async fn payment_for_order(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Payment, PaymentError> {
        let caller = cx.caller().ok_or(PaymentError::Unauthenticated)?;
        let payment = self.by_order(order).await?;
        if caller.may_access(payment.customer_id) {
            Ok(payment)
        } else {
            Err(PaymentError::NotFound)
        }
    }

    async fn payment(&self, cx: &CallContext, id: PaymentId) -> Result<Payment, PaymentError> {
        let caller = cx.caller().ok_or(PaymentError::Unauthenticated)?;
        let mut conn = self.conn().await?;
        let (payment, _) = Self::load(&mut conn, "id", id.as_uuid())
            .await?
            .ok_or(PaymentError::NotFound)?;
        if caller.may_access(payment.customer_id) {
            Ok(payment)
        } else {
            Err(PaymentError::NotFound)
        }
    }
}
