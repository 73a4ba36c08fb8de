//! `/products` routes: thin adapters from HTTP to [`CatalogApi`].

use actix_web::http::header;
use actix_web::web::{Data, Json, Path, Query};
use actix_web::{HttpResponse, get, patch, post};
use auth::AdminOnly;
use catalog_api::{
    CatalogApi, CatalogError, ListProducts, NewProduct, Product, ProductId, ProductPatch,
};
use kernel::{Page, ProblemBody};
use web::{ApiError, PageQuery, RequestCx};

use crate::CatalogModule;

/// Registers the catalog's routes (relative to `/api/v1`).
pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig<'_>) {
    cfg.service(list_products)
        .service(create_product)
        .service(get_product)
        .service(update_product);
}

type Result<T> = std::result::Result<T, ApiError<CatalogError>>;

/// List products, oldest first, one page at a time.
#[utoipa::path(
    tag = "catalog",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of products", body = Page<Product>),
        (status = 400, description = "Malformed query or cursor", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Limit out of range", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
#[get("/products")]
pub async fn list_products(
    catalog: Data<CatalogModule>,
    RequestCx(cx): RequestCx,
    query: Query<PageQuery>,
) -> std::result::Result<HttpResponse, actix_web::Error> {
    let (limit, cursor) = query.parse()?;
    let page = catalog
        .list_products(&cx, ListProducts { limit, cursor })
        .await
        .map_err(ApiError)?;
    Ok(HttpResponse::Ok().json(page))
}

/// Create a product. Admin only.
#[utoipa::path(
    tag = "catalog",
    request_body = NewProduct,
    responses(
        (status = 201, description = "The new product", body = Product,
            headers(("location" = String, description = "URL of the new product"))),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The SKU is taken", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"])),
)]
#[post("/products")]
pub async fn create_product(
    catalog: Data<CatalogModule>,
    RequestCx(cx): RequestCx,
    _admin: AdminOnly,
    body: Json<NewProduct>,
) -> Result<HttpResponse> {
    let product = catalog.create_product(&cx, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/products/{}", product.id)))
        .json(product))
}

/// Get one product.
#[utoipa::path(
    tag = "catalog",
    params(("id" = ProductId, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 400, description = "The id is not a UUID", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
#[get("/products/{id}")]
pub async fn get_product(
    catalog: Data<CatalogModule>,
    RequestCx(cx): RequestCx,
    id: Path<ProductId>,
) -> Result<Json<Product>> {
    Ok(Json(catalog.get_product(&cx, id.into_inner()).await?))
}

/// Change some fields of a product (JSON merge patch). Admin only.
#[utoipa::path(
    tag = "catalog",
    params(("id" = ProductId, Path, description = "Product id")),
    request_body(content = ProductPatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The changed product", body = Product),
        (status = 400, description = "Malformed JSON or id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"])),
)]
#[patch("/products/{id}")]
pub async fn update_product(
    catalog: Data<CatalogModule>,
    RequestCx(cx): RequestCx,
    _admin: AdminOnly,
    id: Path<ProductId>,
    body: Json<ProductPatch>,
) -> Result<Json<Product>> {
    let product = catalog
        .update_product(&cx, id.into_inner(), body.into_inner())
        .await?;
    Ok(Json(product))
}
