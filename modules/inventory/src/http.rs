//! `/inventory` routes: thin adapters over [`InventoryApi`]. Stock and its
//! history are for admins; reservations are made and moved by the order
//! module only (the `service` role), and read by both.

use actix_web::http::header;
use actix_web::web::{Data, Json, Path, Query};
use actix_web::{HttpRequest, HttpResponse, get, post};
use auth::{AdminOnly, Authenticated};
use catalog_api::Sku;
use inventory_api::{
    Adjustment, InventoryApi, InventoryError, ListMovements, Movement, OrderId, Reservation,
    ReserveStock, StockLevel,
};
use kernel::{Page, ProblemBody};
use web::{ApiError, PageQuery, RequestCx};

use crate::InventoryModule;

/// Registers the routes (relative to `/api/v1`); reservations first, so
/// `/inventory/reservations` is never taken for a SKU (its other methods
/// are 405, not the stock of a SKU `RESERVATIONS`).
pub fn configure(cfg: &mut web::Routes<'_, '_>) {
    cfg.service(reserve_stock)
        .route(
            "/inventory/reservations",
            web::problem::method_not_allowed("POST"),
        )
        .service(get_reservation)
        .service(commit_reservation)
        .service(release_reservation)
        .service(restock_reservation)
        .service(get_stock)
        .service(adjust_stock)
        .service(list_movements);
}

type Result<T> = std::result::Result<T, ApiError<InventoryError>>;

/// Stock of a SKU: on hand, reserved, available. Admin only.
#[utoipa::path(
    tag = "inventory",
    params(("sku" = Sku, Path, description = "SKU")),
    responses(
        (status = 200, description = "The stock (zero for a SKU never stocked)", body = StockLevel),
        (status = 400, description = "Not a SKU", body = ProblemBody),
    ),
    security(("bearer" = ["admin"])),
)]
#[get("/inventory/{sku}")]
pub async fn get_stock(
    inventory: Data<InventoryModule>,
    _admin: AdminOnly,
    RequestCx(cx): RequestCx,
    sku: Path<Sku>,
) -> Result<Json<StockLevel>> {
    Ok(Json(inventory.stock(&cx, &sku).await?))
}

/// Receive (positive) or correct (negative) stock. Admin only. With an
/// `Idempotency-Key` header (as `POST /orders` takes it), the adjustment
/// asked again (its answer lost, or a gateway's 502 `upstream_answer_broken`)
/// is made once: a repeat with the same quantity and reason changes nothing
/// and answers the stock as it is now, with `idempotent-replayed: true`;
/// the same key with another quantity or reason is 422. A key is kept with
/// the movement it made, for good, and is the SKU's own; a refused
/// adjustment (409, 422) keeps nothing, so its key is still free.
#[utoipa::path(
    tag = "inventory",
    params(("sku" = Sku, Path, description = "SKU"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]+$",
            description = "1 to 255 visible ASCII characters, unique per adjustment of this SKU (a UUID): the adjustment is made once however often it is sent")),
    request_body = Adjustment,
    responses(
        (status = 200, description = "The stock after the change (for a replay: the stock as it is now; the change was made once)", body = StockLevel,
            headers(("idempotent-replayed" = String, description = "`true` when the key made its adjustment before and nothing was made now"))),
        (status = 400, description = "An `Idempotency-Key` outside its form (`idempotency_key_required`); a path parameter that does not parse (`invalid_path_parameter`); a body that is not JSON (`malformed_body`)", body = ProblemBody),
        (status = 409, description = "The correction would take available stock below zero", body = ProblemBody),
        (status = 422, description = "Invalid fields (`validation_failed`), or the `Idempotency-Key` made an adjustment of this SKU with another quantity or reason (`idempotency_key_reused`)", body = ProblemBody),
    ),
    security(("bearer" = ["admin"])),
)]
#[post("/inventory/{sku}/adjustments")]
pub async fn adjust_stock(
    inventory: Data<InventoryModule>,
    _admin: AdminOnly,
    RequestCx(cx): RequestCx,
    req: HttpRequest,
    sku: Path<Sku>,
    body: Json<Adjustment>,
) -> Result<HttpResponse> {
    let mut adjustment = body.into_inner();
    // A header that is not text is no key: refused, not taken as none
    // (the adjustment would be made again).
    adjustment.idempotency_key = (req.headers().get("idempotency-key"))
        .map(|key| key.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| InventoryError::InvalidIdempotencyKey)?;
    let (level, replayed) = inventory.adjust_keyed(&cx, &sku, adjustment).await?;
    let mut response = HttpResponse::Ok();
    if replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    Ok(response.json(level))
}

/// The stock history of a SKU, newest first. Admin only.
#[utoipa::path(
    tag = "inventory",
    params(("sku" = Sku, Path, description = "SKU"), PageQuery),
    responses((status = 200, description = "A page of movements", body = Page<Movement>)),
    security(("bearer" = ["admin"])),
)]
#[get("/inventory/{sku}/movements")]
pub async fn list_movements(
    inventory: Data<InventoryModule>,
    _admin: AdminOnly,
    RequestCx(cx): RequestCx,
    sku: Path<Sku>,
    query: Query<PageQuery>,
) -> std::result::Result<Json<Page<Movement>>, actix_web::Error> {
    let (limit, cursor) = query.parse()?;
    let page = inventory
        .movements(&cx, &sku, ListMovements { limit, cursor })
        .await
        .map_err(ApiError)?;
    Ok(Json(page))
}

/// Hold stock for an order: every line or none. Repeating the same request
/// returns the same reservation, unless its stock went back (released,
/// expired, or returned after its sale): then it is refused and holds
/// nothing. For the order module only (`service`): its checkout owns the
/// reservation.
#[utoipa::path(
    tag = "inventory",
    request_body = ReserveStock,
    responses(
        (status = 201, description = "The reservation", body = Reservation,
            headers(("location" = String, description = "URL of the reservation"))),
        (status = 409, description = "Insufficient stock (`insufficient_stock`, the short SKUs are in `errors`); the order holds another reservation (`reservation_conflict`); or its reservation was released, expired or returned, or released before it was made (`invalid_reservation_transition`, with `current_status`)", body = ProblemBody),
        (status = 422, description = "Invalid lines", body = ProblemBody),
    ),
    security(("bearer" = ["service"])),
)]
#[post("/inventory/reservations")]
pub async fn reserve_stock(
    inventory: Data<InventoryModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    body: Json<ReserveStock>,
) -> Result<HttpResponse> {
    let reservation = inventory.reserve(&cx, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/api/v1/inventory/reservations/{}", reservation.order_id),
        ))
        .json(reservation))
}

/// One reservation. For admins and the order module (`service`).
#[utoipa::path(
    tag = "inventory",
    params(("order_id" = OrderId, Path, description = "Order id")),
    responses(
        (status = 200, description = "The reservation", body = Reservation),
        (status = 404, description = "No reservation for this order", body = ProblemBody),
    ),
    security(("bearer" = ["admin", "service"])),
)]
#[get("/inventory/reservations/{order_id}")]
pub async fn get_reservation(
    inventory: Data<InventoryModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    order: Path<OrderId>,
) -> Result<Json<Reservation>> {
    Ok(Json(inventory.reservation(&cx, order.into_inner()).await?))
}

/// Turn a reservation into a sale (idempotent). For the order module only
/// (`service`).
#[utoipa::path(
    tag = "inventory",
    params(("order_id" = OrderId, Path, description = "Order id")),
    responses(
        (status = 200, description = "The committed reservation", body = Reservation),
        (status = 404, description = "No reservation for this order", body = ProblemBody),
        (status = 409, description = "Released, expired or returned (`invalid_reservation_transition`, with `current_status`)", body = ProblemBody),
    ),
    security(("bearer" = ["service"])),
)]
#[post("/inventory/reservations/{order_id}/commit")]
pub async fn commit_reservation(
    inventory: Data<InventoryModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    order: Path<OrderId>,
) -> Result<Json<Reservation>> {
    Ok(Json(inventory.commit(&cx, order.into_inner()).await?))
}

/// Give a reservation's stock back (idempotent). For an order with no
/// reservation yet the answer is 404, and the order is fenced off: a
/// reservation for it that arrives later is refused (409). For the order
/// module only (`service`).
#[utoipa::path(
    tag = "inventory",
    params(("order_id" = OrderId, Path, description = "Order id")),
    responses(
        (status = 200, description = "The released reservation", body = Reservation),
        (status = 404, description = "No reservation for this order (now fenced off)", body = ProblemBody),
        (status = 409, description = "Already committed, or returned (`invalid_reservation_transition`, with `current_status`)", body = ProblemBody),
    ),
    security(("bearer" = ["service"])),
)]
#[post("/inventory/reservations/{order_id}/release")]
pub async fn release_reservation(
    inventory: Data<InventoryModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    order: Path<OrderId>,
) -> Result<Json<Reservation>> {
    Ok(Json(inventory.release(&cx, order.into_inner()).await?))
}

/// Put a committed reservation's units back on hand (the order was
/// cancelled after the sale); repeating it changes nothing. For the order
/// module only (`service`).
#[utoipa::path(
    tag = "inventory",
    params(("order_id" = OrderId, Path, description = "Order id")),
    responses(
        (status = 200, description = "The reservation, returned", body = Reservation),
        (status = 404, description = "No reservation for this order", body = ProblemBody),
        (status = 409, description = "The reservation was never committed", body = ProblemBody),
        (status = 422, description = "Putting the units back would hold more than 2,147,483,647 on hand of a SKU (`validation_failed`, field `lines`)", body = ProblemBody),
    ),
    security(("bearer" = ["service"])),
)]
#[post("/inventory/reservations/{order_id}/restock")]
pub async fn restock_reservation(
    inventory: Data<InventoryModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    order: Path<OrderId>,
) -> Result<Json<Reservation>> {
    Ok(Json(inventory.restock(&cx, *order).await?))
}
