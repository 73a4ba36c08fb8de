//! `/cart` and `/orders` routes.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Json, Path, Query};
use actix_web::{HttpRequest, HttpResponse, get, post, put};
use auth::{AdminOnly, Authenticated};
use kernel::{OrderId, Page, ProblemBody};
use web::{ApiError, PageQuery, RequestCx};

use crate::model::{Cart, Order, PlaceOrder, TimelineEntry};
use crate::{OrderError, OrderModule, idempotency_key};

/// Registers the routes (relative to `/api/v1`).
pub fn configure(cfg: &mut web::Routes<'_, '_>) {
    cfg.service(rebuild_projections)
        .service(get_cart)
        .service(put_cart)
        .service(place_order)
        .service(list_orders)
        .service(get_order)
        .service(order_timeline)
        .service(cancel_order)
        .service(ship_order);
}

type Result<T> = std::result::Result<T, ApiError<OrderError>>;

/// Your cart.
#[utoipa::path(
    tag = "orders",
    responses((status = 200, description = "The cart (empty when never set)", body = Cart)),
    security(("bearer" = [])),
)]
#[get("/cart")]
pub async fn get_cart(
    orders: Data<OrderModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
) -> Result<Json<Cart>> {
    Ok(Json(orders.cart(&cx).await?))
}

/// Replace your cart. Quantities 1 to 100, each product once, products
/// for sale; prices are the catalog's at checkout.
#[utoipa::path(
    tag = "orders",
    params(
        ("If-Match" = Option<String>, Header, description = "Replace the cart only if it is still this version: the `ETag` of a GET of it (or `*`). Without it the cart is replaced whatever it holds."),
    ),
    request_body = Cart,
    responses(
        (status = 200, description = "The cart", body = Cart,
            headers(("etag" = String, description = "The cart's version now, as a GET of it would answer: the `If-Match` of a next change"))),
        (status = 412, description = "The cart changed since the version named in `If-Match` (`precondition_failed`), in another tab or device: nothing was changed; GET it again", body = ProblemBody),
        (status = 422, description = "Invalid items", body = ProblemBody),
    ),
    security(("bearer" = [])),
)]
#[put("/cart")]
pub async fn put_cart(
    orders: Data<OrderModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    if_match: web::etag::IfMatch,
    body: Json<Cart>,
) -> Result<HttpResponse> {
    let cart = orders.put_cart(&cx, body.into_inner(), &if_match).await?;
    // With the tag a GET would answer (the same JSON), so the next
    // conditional change needs no read.
    let json = serde_json::to_vec(&cart)
        .map_err(|e| OrderError::from(kernel::Failure::Unexpected(format!("cart as JSON: {e}"))))?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::ETAG, web::etag::tag_of(&json)))
        .content_type(actix_web::http::header::ContentType::json())
        .body(json))
}

/// Order your cart. Needs an `Idempotency-Key` header: the first answer is
/// kept for 24 hours and replayed for the same key and body (header
/// `idempotent-replayed: true`); the same key with another body is 422, and
/// 409 while the first request runs. The order takes the cart it priced, or
/// nothing: two orders placed at once with different keys order the cart
/// once (the other is answered as an empty cart). 201 when the checkout finished (the
/// order `confirmed`, or `failed` or `cancelled` with a reason), 202 with
/// `Location` while it still runs.
#[utoipa::path(
    tag = "orders",
    request_body = PlaceOrder,
    params(("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]+$",
        description = "1 to 255 visible ASCII characters, unique per checkout (a UUID)")),
    responses(
        (status = 201, description = "The order, settled (confirmed, failed or cancelled)", body = Order,
            headers(("location" = String, description = "URL of the order"), ("idempotent-replayed" = String, description = "`true` when this is the first answer to this key, replayed"))),
        (status = 202, description = "The order, still being processed; poll Location", body = Order,
            headers(("location" = String, description = "URL of the order, to poll"), ("idempotent-replayed" = String, description = "`true` when this is the first answer to this key, replayed"))),
        (status = 400, description = "No Idempotency-Key, or one outside its form (`idempotency_key_required`); a body that is not JSON (`malformed_body`)", body = ProblemBody),
        (status = 402, description = "The provider refused the card before the order was placed (`card_rejected`, the reason in `decline_code`)", body = ProblemBody,
            headers(("idempotent-replayed" = String, description = "`true` when this is the first answer to this key, replayed"))),
        (status = 409, description = "The first request with this key is still running (`idempotency_key_in_use`, with `retry-after`), or the cart changed twice while the order was placed (`cart_changed`: nothing was ordered and nothing is kept for the key)", body = ProblemBody,
            headers(("retry-after" = String, description = "Seconds to wait before trying again"))),
        (status = 422, description = "Empty cart, a cart with nothing to pay (free products alone), products no longer for sale, a cart whose total does not fit or mixes currencies, invalid card number, or the key was used with another body", body = ProblemBody,
            headers(("idempotent-replayed" = String, description = "`true` when this is the first answer to this key, replayed (not for a key used with another body)"))),
    ),
    security(("bearer" = [])),
)]
#[post("/orders")]
pub async fn place_order(
    orders: Data<OrderModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    req: HttpRequest,
    body: Json<PlaceOrder>,
) -> Result<HttpResponse> {
    let key = idempotency_key(
        req.headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok()),
    )?;
    let outcome = orders.place(&cx, &key, body.into_inner()).await?;
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    if let Some(location) = &outcome.location {
        response.insert_header(("location", location.as_str()));
    }
    if outcome.replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    if status.is_client_error() || status.is_server_error() {
        response.content_type("application/problem+json");
        if status == StatusCode::CONFLICT {
            response.insert_header(("retry-after", "1"));
        }
    }
    Ok(response.json(outcome.body))
}

/// Your orders, newest first.
#[utoipa::path(
    tag = "orders",
    params(PageQuery),
    responses((status = 200, description = "A page of orders", body = Page<Order>)),
    security(("bearer" = [])),
)]
#[get("/orders")]
pub async fn list_orders(
    orders: Data<OrderModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    query: Query<PageQuery>,
) -> std::result::Result<Json<Page<Order>>, actix_web::Error> {
    let (limit, cursor) = query.parse()?;
    Ok(Json(
        orders.orders(&cx, limit, cursor).await.map_err(ApiError)?,
    ))
}

/// One order (yours; admins: any).
#[utoipa::path(
    tag = "orders",
    params(("id" = OrderId, Path, description = "The order")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 404, description = "No such order (or not yours)", body = ProblemBody),
    ),
    security(("bearer" = [])),
)]
#[get("/orders/{id}")]
pub async fn get_order(
    orders: Data<OrderModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    id: Path<OrderId>,
) -> Result<Json<Order>> {
    Ok(Json(orders.order(&cx, *id).await?))
}

/// Everything that happened to an order, oldest first (its events).
#[utoipa::path(
    tag = "orders",
    params(("id" = OrderId, Path, description = "The order")),
    responses(
        (status = 200, description = "The timeline", body = Vec<TimelineEntry>),
        (status = 404, description = "No such order (or not yours)", body = ProblemBody),
    ),
    security(("bearer" = [])),
)]
#[get("/orders/{id}/timeline")]
pub async fn order_timeline(
    orders: Data<OrderModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    id: Path<OrderId>,
) -> Result<Json<Vec<TimelineEntry>>> {
    Ok(Json(orders.timeline(&cx, *id).await?))
}

/// Cancel an order not yet shipped: the payment is voided or refunded and
/// the stock given back. Answers the order (status `cancelled` once done);
/// an order being cancelled already is answered the same. An order failing
/// (a checkout step failed and everything is being given back) is not
/// cancelled: it ends `failed`.
#[utoipa::path(
    tag = "orders",
    params(("id" = OrderId, Path, description = "The order")),
    responses(
        (status = 200, description = "The order (also when it is being cancelled already)", body = Order),
        (status = 404, description = "No such order (or not yours)", body = ProblemBody),
        (status = 409, description = "Shipped, failed or cancelled already, or failing: a checkout step failed and the order ends `failed` (`invalid_order_transition`, the status in `detail`)", body = ProblemBody),
    ),
    security(("bearer" = [])),
)]
#[post("/orders/{id}/cancel")]
pub async fn cancel_order(
    orders: Data<OrderModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    id: Path<OrderId>,
) -> Result<Json<Order>> {
    Ok(Json(orders.cancel(&cx, *id).await?))
}

/// Mark a confirmed order shipped. Admin only.
#[utoipa::path(
    tag = "orders",
    params(("id" = OrderId, Path, description = "The order")),
    responses(
        (status = 200, description = "The order, shipped", body = Order),
        (status = 404, description = "No such order", body = ProblemBody),
        (status = 409, description = "Not confirmed (`invalid_order_transition`, the status in `detail`)", body = ProblemBody),
    ),
    security(("bearer" = ["admin"])),
)]
#[post("/orders/{id}/ship")]
pub async fn ship_order(
    orders: Data<OrderModule>,
    _admin: AdminOnly,
    RequestCx(cx): RequestCx,
    id: Path<OrderId>,
) -> Result<Json<Order>> {
    Ok(Json(orders.ship(&cx, *id).await?))
}

/// What a rebuild did.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Rebuilt {
    /// Orders whose projection was rewritten from their events.
    pub rebuilt: usize,
}

/// Rewrite every order's current state from its events (after a change
/// of the fold, or to repair the projection). Admin only.
#[utoipa::path(
    tag = "orders",
    responses((status = 200, description = "How many orders were rebuilt", body = Rebuilt)),
    security(("bearer" = ["admin"])),
)]
#[post("/orders/projections/rebuild")]
pub async fn rebuild_projections(
    orders: Data<OrderModule>,
    _admin: AdminOnly,
) -> Result<Json<Rebuilt>> {
    Ok(Json(Rebuilt {
        rebuilt: orders.rebuild_projections().await?,
    }))
}
