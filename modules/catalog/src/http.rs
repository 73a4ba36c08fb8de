//! `/products` and `/categories` routes: thin adapters from HTTP to [`CatalogApi`].

use actix_web::http::header;
use actix_web::web::{Data, Json, Path, Query};
use actix_web::{HttpResponse, get, patch, post};
use auth::AdminOnly;
use catalog_api::{
    CatalogApi, CatalogError, Category, CategoryId, ListProducts, NewCategory, NewProduct, Product,
    ProductFilter, ProductId, ProductPatch, ProductSort,
};
use kernel::{Page, ProblemBody};
use serde::Deserialize;
use utoipa::IntoParams;
use web::{ApiError, PageQuery, RequestCx};

use crate::CatalogModule;

/// Registers the catalog's routes (relative to `/api/v1`).
pub fn configure(cfg: &mut web::Routes<'_, '_>) {
    cfg.service(list_products)
        .service(create_product)
        .service(get_product)
        .service(update_product)
        .service(list_categories)
        .service(create_category);
}

type Result<T> = std::result::Result<T, ApiError<CatalogError>>;

/// Product reads are the same for everyone: shared caches may keep them a
/// little while; clients revalidate with `If-None-Match`.
const PRODUCT_CACHE_CONTROL: &str = "public, max-age=30";
/// Lists change more often.
const LIST_CACHE_CONTROL: &str = "public, max-age=5";

/// Query parameters of the product list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ProductListQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "web::whole_number")]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (valid for the same sort and filters).
    #[param(min_length = 1, pattern = r"^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
    /// Full-text search over SKU, name and description (web search syntax:
    /// `blue mug`, `"tea cup"`, `mug -blue`), 1 to 200 characters not
    /// counting surrounding whitespace.
    #[param(
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[\s\S]{0,198}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    q: Option<String>,
    /// In this category or its subcategories.
    category_id: Option<CategoryId>,
    /// Price at least this many minor units (not above `max_price`).
    #[param(minimum = 0)]
    min_price: Option<i64>,
    /// Price at most this many minor units.
    #[param(minimum = 0)]
    max_price: Option<i64>,
    /// For sale or not.
    active: Option<bool>,
    /// `true`: in stock or low; `false`: out of stock or never stocked.
    in_stock: Option<bool>,
    /// `created` (default), `newest`, `price_asc`, `price_desc`, `name`,
    /// `relevance` (default with `q`).
    sort: Option<ProductSort>,
}

/// List products: filter, search, sort, one page at a time.
#[utoipa::path(
    tag = "catalog",
    params(ProductListQuery),
    responses(
        (status = 200, description = "A page of products", body = Page<Product>,
            headers(
                ("etag" = String, description = "Send back in If-None-Match"),
                ("cache-control" = String, description = "`public, max-age=5`: caches may reuse the page for 5 s"),
            )),
        (status = 304, description = "Not modified since the ETag you sent"),
        (status = 400, description = "Malformed query or cursor", body = ProblemBody),
        (status = 422, description = "Limit out of range, impossible filter, relevance without q", body = ProblemBody),
    ),
)]
#[get("/products")]
pub async fn list_products(
    catalog: Data<CatalogModule>,
    RequestCx(cx): RequestCx,
    query: Query<ProductListQuery>,
) -> std::result::Result<HttpResponse, actix_web::Error> {
    let query = query.into_inner();
    let (limit, cursor) = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    }
    .parse()?;
    let filter = ProductFilter {
        category_id: query.category_id,
        min_price: query.min_price,
        max_price: query.max_price,
        active: query.active,
        in_stock: query.in_stock,
        q: query.q,
    };
    let page = catalog
        .list_products(
            &cx,
            ListProducts {
                limit,
                cursor,
                filter,
                sort: query.sort,
            },
        )
        .await
        .map_err(ApiError)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, LIST_CACHE_CONTROL))
        .json(page))
}

/// The category tree: top-level categories with their subcategories.
#[utoipa::path(
    tag = "catalog",
    responses((status = 200, description = "Every category", body = Vec<Category>,
        headers(("cache-control" = String, description = "`public, max-age=60`: caches may reuse the tree for 60 s")))),
)]
#[get("/categories")]
pub async fn list_categories(
    catalog: Data<CatalogModule>,
    RequestCx(cx): RequestCx,
) -> Result<HttpResponse> {
    let tree = catalog.list_categories(&cx).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=60"))
        .json(tree))
}

/// Create a category (under a top-level one, or top-level). Admin only.
#[utoipa::path(
    tag = "catalog",
    request_body = NewCategory,
    responses(
        (status = 201, description = "The new category", body = Category,
            headers(("location" = String, description = "URL of the category list"))),
        (status = 409, description = "The slug is taken", body = ProblemBody),
        (status = 422, description = "Invalid fields, or a parent that is a subcategory", body = ProblemBody),
    ),
    security(("bearer" = ["admin"])),
)]
#[post("/categories")]
pub async fn create_category(
    catalog: Data<CatalogModule>,
    RequestCx(cx): RequestCx,
    _admin: AdminOnly,
    body: Json<NewCategory>,
) -> Result<HttpResponse> {
    let category = catalog.create_category(&cx, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, "/api/v1/categories"))
        .json(category))
}

/// Create a product. Admin only.
#[utoipa::path(
    tag = "catalog",
    request_body = NewProduct,
    responses(
        (status = 201, description = "The new product", body = Product,
            headers(("location" = String, description = "URL of the new product"))),
        (status = 400, description = "Malformed JSON", body = ProblemBody),
        (status = 409, description = "The SKU is taken", body = ProblemBody),
        (status = 415, description = "Not JSON", body = ProblemBody),
        (status = 422, description = "Invalid fields", body = ProblemBody),
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
        (status = 200, description = "The product", body = Product,
            headers(
                ("etag" = String, description = "Send back in If-None-Match, or in If-Match on a change"),
                ("cache-control" = String, description = "`public, max-age=30`: caches may reuse it for 30 s; after a 412 read it again with `Cache-Control: no-cache`"),
            )),
        (status = 304, description = "Not modified since the ETag you sent"),
        (status = 400, description = "The id is not a UUID", body = ProblemBody),
        (status = 404, description = "No such product", body = ProblemBody),
    ),
)]
#[get("/products/{id}")]
pub async fn get_product(
    catalog: Data<CatalogModule>,
    RequestCx(_cx): RequestCx,
    id: Path<ProductId>,
) -> Result<HttpResponse> {
    // The representation made when the product was cached, with its tag
    // (the ETag middleware answers `If-None-Match` with it, hashing nothing).
    let product = catalog.product(id.into_inner()).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, PRODUCT_CACHE_CONTROL))
        .insert_header((header::ETAG, product.etag.clone()))
        .content_type(header::ContentType::json())
        .body(product.json.clone()))
}

/// Change some fields of a product (JSON merge patch). Admin only.
#[utoipa::path(
    tag = "catalog",
    params(
        ("id" = ProductId, Path, description = "Product id"),
        ("If-Match" = Option<String>, Header, description = "Change the product only if it is still this version: the `ETag` of a GET of it (or `*`). Without it the change is unconditional."),
    ),
    request_body(content = ProductPatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The changed product", body = Product,
            headers(("etag" = String, description = "The changed product's version, as a GET of it would answer: the `If-Match` of a next change"))),
        (status = 400, description = "Malformed JSON or id", body = ProblemBody),
        (status = 404, description = "No such product", body = ProblemBody),
        (status = 412, description = "The product changed since the version named in `If-Match` (`precondition_failed`): nothing was changed; GET it again", body = ProblemBody),
        (status = 422, description = "Invalid fields", body = ProblemBody),
    ),
    security(("bearer" = ["admin"])),
)]
#[patch("/products/{id}")]
pub async fn update_product(
    catalog: Data<CatalogModule>,
    RequestCx(cx): RequestCx,
    _admin: AdminOnly,
    id: Path<ProductId>,
    if_match: web::etag::IfMatch,
    body: Json<ProductPatch>,
) -> Result<HttpResponse> {
    let product = catalog
        .update_product_if(&cx, id.into_inner(), body.into_inner(), &if_match)
        .await?;
    // With the tag a GET would answer (the same JSON), so the next
    // conditional change needs no read, which a shared cache may answer
    // with an older version for `max-age`.
    let product = crate::CachedProduct::new(product)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, product.etag))
        .content_type(header::ContentType::json())
        .body(product.json))
}
