//! Storage of products in `catalog.products`. Functions take a connection so
//! a service can run several in one transaction.

use catalog_api::{Product, ProductId, Sku};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kernel::{Currency, Money};
use uuid::Uuid;

use crate::domain::{ValidNewProduct, ValidPatch};

diesel::table! {
    catalog.products (id) {
        id -> Uuid,
        sku -> Text,
        name -> Text,
        description -> Nullable<Text>,
        price_amount_minor -> BigInt,
        price_currency -> Text,
        active -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

/// Name of the unique constraint on SKUs, to recognise duplicates.
pub(crate) const SKU_UNIQUE: &str = "products_sku_key";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = products)]
pub(crate) struct ProductRow {
    id: Uuid,
    sku: String,
    name: String,
    description: Option<String>,
    price_amount_minor: i64,
    price_currency: String,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ProductRow {
    /// The row as the contract's DTO. The table's CHECK constraints keep
    /// SKU and currency valid; a row breaking them is reported, not trusted.
    pub(crate) fn into_product(self) -> Result<Product, String> {
        let sku = Sku::parse(&self.sku).map_err(|e| format!("stored SKU `{}`: {e}", self.sku))?;
        let currency: Currency = self
            .price_currency
            .parse()
            .map_err(|e| format!("stored currency: {e}"))?;
        Ok(Product {
            id: ProductId::from(self.id),
            sku,
            name: self.name,
            description: self.description,
            price: Money::new(self.price_amount_minor, currency),
            active: self.active,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = products)]
struct NewProductRow<'a> {
    id: Uuid,
    sku: &'a str,
    name: &'a str,
    description: Option<&'a str>,
    price_amount_minor: i64,
    price_currency: &'a str,
    active: bool,
}

#[derive(AsChangeset)]
#[diesel(table_name = products)]
struct PatchRow<'a> {
    name: Option<&'a str>,
    description: Option<Option<&'a str>>,
    price_amount_minor: Option<i64>,
    price_currency: Option<&'a str>,
    active: Option<bool>,
}

/// Inserts a product; created_at and updated_at come from the database clock.
pub(crate) async fn insert(
    conn: &mut AsyncPgConnection,
    id: ProductId,
    new: &ValidNewProduct,
) -> QueryResult<ProductRow> {
    let currency = new.price.currency();
    diesel::insert_into(products::table)
        .values(NewProductRow {
            id: id.as_uuid(),
            sku: new.sku.as_str(),
            name: &new.name,
            description: new.description.as_deref(),
            price_amount_minor: new.price.amount_minor(),
            price_currency: currency.as_str(),
            active: new.active,
        })
        .returning(ProductRow::as_returning())
        .get_result(conn)
        .await
}

/// One product, if it exists.
pub(crate) async fn find(
    conn: &mut AsyncPgConnection,
    id: ProductId,
) -> QueryResult<Option<ProductRow>> {
    products::table
        .find(id.as_uuid())
        .select(ProductRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// One product, locked until the transaction ends (to compare before/after).
pub(crate) async fn find_for_update(
    conn: &mut AsyncPgConnection,
    id: ProductId,
) -> QueryResult<Option<ProductRow>> {
    products::table
        .find(id.as_uuid())
        .select(ProductRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Up to `limit` products after `after`, in id order (creation order).
pub(crate) async fn list(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<ProductRow>> {
    let mut query = products::table
        .select(ProductRow::as_select())
        .order(products::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(products::id.gt(after));
    }
    query.load(conn).await
}

/// Applies a patch; `None` when the product does not exist.
pub(crate) async fn update(
    conn: &mut AsyncPgConnection,
    id: ProductId,
    patch: &ValidPatch,
) -> QueryResult<Option<ProductRow>> {
    let currency = patch.price.map(|p| p.currency());
    let changes = PatchRow {
        name: patch.name.as_deref(),
        description: patch.description.as_ref().map(Option::as_deref),
        price_amount_minor: patch.price.map(|p| p.amount_minor()),
        price_currency: currency.as_ref().map(Currency::as_str),
        active: patch.active,
    };
    diesel::update(products::table.find(id.as_uuid()))
        .set((changes, products::updated_at.eq(diesel::dsl::now)))
        .returning(ProductRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}
