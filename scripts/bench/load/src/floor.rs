//! `bench-floor`: the floors of the catalog-read benchmark, on loopback.
//!
//! ```text
//! bench-floor PORT DATABASE_URL
//! ```
//! - `GET /plaintext`: actix-web answering a fixed text, nothing else;
//! - `GET /products/{id}`: actix-web and a diesel-async pool reading the
//!   product row the shop reads (same columns, cached prepared statement)
//!   and writing the same JSON, with no middleware at all.
//!
//! The shop's figures are reported as ratios of these, measured in the
//! same run on the same machine (scripts/bench/catalog-read).
#![allow(clippy::print_stdout)]

use actix_web::{App, HttpResponse, HttpServer, web};
use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl as _;

#[derive(diesel::QueryableByName, serde::Serialize)]
struct Product {
    #[diesel(sql_type = SqlUuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    sku: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<Text>)]
    description: Option<String>,
    #[diesel(sql_type = BigInt)]
    #[serde(skip)]
    price_amount_minor: i64,
    #[diesel(sql_type = Text)]
    #[serde(skip)]
    price_currency: String,
    #[diesel(sql_type = Bool)]
    active: bool,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    category_id: Option<uuid::Uuid>,
    #[diesel(sql_type = Array<Text>)]
    images: Vec<String>,
    #[diesel(sql_type = Jsonb)]
    attributes: serde_json::Value,
    #[diesel(sql_type = Text)]
    availability: String,
}

/// The shop's JSON shape: the row with its price as a money object.
#[derive(serde::Serialize)]
struct Answer<'a> {
    #[serde(flatten)]
    product: &'a Product,
    price: serde_json::Value,
}

async fn plaintext() -> HttpResponse {
    HttpResponse::Ok().body("Hello, World!")
}

async fn product(pool: web::Data<db::Pool>, id: web::Path<uuid::Uuid>) -> HttpResponse {
    let Ok(mut conn) = pool.get().await else {
        return HttpResponse::ServiceUnavailable().finish();
    };
    let row: Option<Product> = match db::sql(
        "SELECT id, sku, name, description, price_amount_minor, price_currency, active, created_at, \
         updated_at, category_id, images, attributes, availability FROM products WHERE id = $1",
    )
    .bind::<SqlUuid, _>(*id)
    .get_result(&mut conn)
    .await
    .optional()
    {
        Ok(row) => row,
        Err(_) => return HttpResponse::InternalServerError().finish(),
    };
    match row {
        Some(product) => {
            let price = serde_json::json!({
                "amount_minor": product.price_amount_minor,
                "currency": product.price_currency,
            });
            HttpResponse::Ok().json(Answer {
                product: &product,
                price,
            })
        }
        None => HttpResponse::NotFound().finish(),
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(url)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: bench-floor PORT DATABASE_URL");
    };
    let port: u16 = port.parse()?;
    let pool = db::build_pool(&db::PoolOptions {
        url: url.clone(),
        schema: "catalog",
        max_size: 20,
        // One share per server worker (actix-web's default: one per core),
        // as the shop's pools do.
        runtimes: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        acquire_timeout: std::time::Duration::from_secs(5),
        connect_timeout: std::time::Duration::from_secs(5),
        statement_timeout: std::time::Duration::from_secs(5),
    })?;
    let pool = web::Data::new(pool);
    println!("bench-floor on 127.0.0.1:{port}");
    HttpServer::new(move || {
        App::new()
            .app_data(pool.clone())
            .route("/plaintext", web::get().to(plaintext))
            .route("/products/{id}", web::get().to(product))
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await?;
    Ok(())
}
