//! `/payments` routes: thin adapters over [`PaymentApi`]. Owners and admins
//! read payments; the steps are for the order module (`service`) only: its
//! saga owns them, and a step taken past it (a refund by hand) would leave
//! the order saying otherwise (a refunded order still shippable). Money goes
//! back by cancelling the order.

use actix_web::web::{Data, Json, Path};
use actix_web::{HttpResponse, get, post};
use auth::Authenticated;
use kernel::{OrderId, ProblemBody};
use payment_api::{
    AuthorizePayment, Payment, PaymentApi, PaymentError, PaymentId, PaymentMethod, Tokenize,
};
use web::{ApiError, RequestCx};

use crate::PaymentModule;

/// Registers the routes (relative to `/api/v1`). `/payments/methods` and
/// `/payments/authorizations` answer their other methods with 405 before
/// `/payments/{id}` could take them for a payment id.
pub fn configure(cfg: &mut web::Routes<'_, '_>) {
    cfg.service(tokenize)
        .route(
            "/payments/methods",
            web::problem::method_not_allowed("POST"),
        )
        .service(authorize)
        .route(
            "/payments/authorizations",
            web::problem::method_not_allowed("POST"),
        )
        .service(payment_for_order)
        .service(capture)
        .service(void)
        .service(refund)
        .service(get_payment);
}

type Result<T> = std::result::Result<T, ApiError<PaymentError>>;

/// Hand a card number to the provider; answers the token that stands for
/// it. For the order module.
#[utoipa::path(
    tag = "payments",
    request_body = Tokenize,
    responses(
        (status = 201, description = "The card's token and last four digits", body = PaymentMethod),
        (status = 402, description = "The provider refused the card (`payment_declined`, the reason in `decline_code`)", body = ProblemBody),
        (status = 422, description = "Not a card number", body = ProblemBody),
        (status = 503, description = "The provider is unavailable", body = ProblemBody),
    ),
    security(("bearer" = ["service"])),
)]
#[post("/payments/methods")]
pub async fn tokenize(
    payments: Data<PaymentModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    body: Json<Tokenize>,
) -> Result<HttpResponse> {
    let method = payments.tokenize(&cx, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(method))
}

/// Hold an amount on a card for an order. Idempotent by order. For the
/// order module.
#[utoipa::path(
    tag = "payments",
    request_body = AuthorizePayment,
    responses(
        (status = 201, description = "The payment, authorized", body = Payment,
            headers(("location" = String, description = "URL of the payment"))),
        (status = 402, description = "Declined; the provider's reason is in `errors`", body = ProblemBody),
        (status = 409, description = "The order already has a payment for another amount, customer or card (its last four digits)", body = ProblemBody),
        (status = 422, description = "Invalid amount, card_last4 or token, or an unknown currency", body = ProblemBody),
        (status = 503, description = "The provider did not answer: the outcome is unknown, ask again", body = ProblemBody),
    ),
    security(("bearer" = ["service"])),
)]
#[post("/payments/authorizations")]
pub async fn authorize(
    payments: Data<PaymentModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    body: Json<AuthorizePayment>,
) -> Result<HttpResponse> {
    let payment = payments.authorize(&cx, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/api/v1/payments/{}", payment.id)))
        .json(payment))
}

/// The payment of an order, with its ledger (owner, admins).
#[utoipa::path(
    tag = "payments",
    params(("order_id" = OrderId, Path, description = "The order")),
    responses(
        (status = 200, description = "The payment", body = Payment),
        (status = 404, description = "No payment for this order (or not yours)", body = ProblemBody),
    ),
    security(("bearer" = [])),
)]
#[get("/payments/orders/{order_id}")]
pub async fn payment_for_order(
    payments: Data<PaymentModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    order: Path<OrderId>,
) -> Result<Json<Payment>> {
    Ok(Json(payments.payment_for_order(&cx, *order).await?))
}

/// Take the held amount (idempotent). For the order module.
#[utoipa::path(
    tag = "payments",
    params(("order_id" = OrderId, Path, description = "The order")),
    responses(
        (status = 200, description = "The payment, captured", body = Payment),
        (status = 402, description = "The provider refused to capture the hold it still has (an expired authorization); its reason is `decline_code`", body = ProblemBody),
        (status = 404, description = "No payment for this order", body = ProblemBody),
        (status = 409, description = "Not authorized (or voided at the provider: recorded so)", body = ProblemBody),
    ),
    security(("bearer" = ["service"])),
)]
#[post("/payments/orders/{order_id}/capture")]
pub async fn capture(
    payments: Data<PaymentModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    order: Path<OrderId>,
) -> Result<Json<Payment>> {
    Ok(Json(payments.capture(&cx, *order).await?))
}

/// Release the hold (idempotent). For the order module.
#[utoipa::path(
    tag = "payments",
    params(("order_id" = OrderId, Path, description = "The order")),
    responses(
        (status = 200, description = "The payment, voided", body = Payment),
        (status = 402, description = "The provider refused to release the hold it still has; its reason is `decline_code`", body = ProblemBody),
        (status = 404, description = "No payment for this order", body = ProblemBody),
        (status = 409, description = "Captured already, perhaps at the provider only: recorded so (refund it)", body = ProblemBody),
    ),
    security(("bearer" = ["service"])),
)]
#[post("/payments/orders/{order_id}/void")]
pub async fn void(
    payments: Data<PaymentModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    order: Path<OrderId>,
) -> Result<Json<Payment>> {
    Ok(Json(payments.void(&cx, *order).await?))
}

/// Give a captured amount back (idempotent). For the order module (an
/// admin gives money back by cancelling the order).
#[utoipa::path(
    tag = "payments",
    params(("order_id" = OrderId, Path, description = "The order")),
    responses(
        (status = 200, description = "The payment, refunded", body = Payment),
        (status = 402, description = "The provider refused to refund the capture it still has; its reason is `decline_code`", body = ProblemBody),
        (status = 404, description = "No payment for this order", body = ProblemBody),
        (status = 409, description = "Never captured", body = ProblemBody),
    ),
    security(("bearer" = ["service"])),
)]
#[post("/payments/orders/{order_id}/refund")]
pub async fn refund(
    payments: Data<PaymentModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    order: Path<OrderId>,
) -> Result<Json<Payment>> {
    Ok(Json(payments.refund(&cx, *order).await?))
}

/// One payment with its ledger (owner, admins).
#[utoipa::path(
    tag = "payments",
    params(("id" = PaymentId, Path, description = "The payment")),
    responses(
        (status = 200, description = "The payment", body = Payment),
        (status = 404, description = "No such payment (or not yours)", body = ProblemBody),
    ),
    security(("bearer" = [])),
)]
#[get("/payments/{id}")]
pub async fn get_payment(
    payments: Data<PaymentModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    id: Path<PaymentId>,
) -> Result<Json<Payment>> {
    Ok(Json(payments.payment(&cx, *id).await?))
}
