//! Storage of products in `catalog.products`. Functions take a connection so
//! a service can run several in one transaction.

use std::sync::LazyLock;

use catalog_api::{Availability, CategoryId, Product, ProductFilter, ProductId, ProductSort, Sku};
use chrono::{DateTime, Datelike as _, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kernel::{Currency, Money};
use uuid::Uuid;

use crate::domain::{ValidNewProduct, ValidPatch};

mod category;

pub(crate) use category::{
    CategoryRow, SLUG_UNIQUE, all_categories, find_category, insert_category,
};

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
        category_id -> Nullable<Uuid>,
        images -> Array<Text>,
        attributes -> Jsonb,
        availability -> Text,
    }
}

diesel::table! {
    catalog.categories (id) {
        id -> Uuid,
        name -> Text,
        slug -> Text,
        parent_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
    }
}

/// Name of the unique constraint on SKUs, to recognise duplicates.
pub(crate) const SKU_UNIQUE: &str = "products_sku_key";

#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
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
    category_id: Option<Uuid>,
    images: Vec<String>,
    attributes: serde_json::Value,
    availability: String,
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
        let serde_json::Value::Object(attributes) = self.attributes else {
            return Err("stored attributes are not an object".to_owned());
        };
        let availability: Availability = self.availability.parse()?;
        Ok(Product {
            category_id: self.category_id.map(CategoryId::from),
            images: self.images,
            attributes,
            availability,
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
    category_id: Option<Uuid>,
    images: &'a [String],
    attributes: &'a serde_json::Value,
}

#[derive(AsChangeset)]
#[diesel(table_name = products)]
struct PatchRow<'a> {
    name: Option<&'a str>,
    description: Option<Option<&'a str>>,
    price_amount_minor: Option<i64>,
    price_currency: Option<&'a str>,
    active: Option<bool>,
    category_id: Option<Option<Uuid>>,
    images: Option<&'a [String]>,
    attributes: Option<&'a serde_json::Value>,
}

/// Inserts a product; created_at and updated_at come from the database clock.
#[tracing::instrument(name = "catalog.repo.insert", skip_all)]
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
            category_id: new.category_id.map(|c| c.as_uuid()),
            images: &new.images,
            attributes: &new.attributes,
        })
        .returning(ProductRow::as_returning())
        .get_result(conn)
        .await
}

/// One product, if it exists; `lock` holds its row until the transaction
/// ends (to compare before and after a change).
#[tracing::instrument(name = "catalog.repo.find", skip_all)]
pub(crate) async fn find(
    conn: &mut AsyncPgConnection,
    id: ProductId,
    lock: bool,
) -> QueryResult<Option<ProductRow>> {
    // Raw text, prepared once per connection like the builder's statements:
    // the query builder wrote this statement's text anew on every call (its
    // thirteen quoted identifiers were an eighth of an uncached read's
    // instructions), to look the prepared statement up.
    static FIND: LazyLock<[String; 2]> = LazyLock::new(|| {
        let find = format!("SELECT {COLUMNS} FROM products WHERE id = $1");
        [find.clone(), find + " FOR UPDATE"]
    });
    db::sql(FIND[usize::from(lock)].as_str())
        .bind::<diesel::sql_types::Uuid, _>(id.as_uuid())
        .get_result(conn)
        .await
        .optional()
}

/// Where a sorted list left off: the sort key of the last item and its id.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ListKey {
    pub(crate) sort: String,
    pub(crate) id: Uuid,
    /// The sort value: a timestamp, price, name or rank.
    pub(crate) value: serde_json::Value,
    /// The listing's filters ([`filters_of`]): a cursor goes on with the
    /// list it came from only. (Absent in cursors made before it was.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) filters: Option<String>,
}

/// A short fingerprint of `filter` (a cursor carries it).
pub(crate) fn filters_of(filter: &catalog_api::ProductFilter) -> String {
    let catalog_api::ProductFilter {
        category_id,
        min_price,
        max_price,
        active,
        in_stock,
        q,
    } = filter;
    let text = format!(
        "{:?}|{min_price:?}|{max_price:?}|{active:?}|{in_stock:?}|{q:?}",
        category_id.map(|c| c.to_string())
    );
    let tag = web::etag::tag_of(text.as_bytes());
    tag.to_str()
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned()
}

/// A product row with its search rank (0 without a search).
#[derive(QueryableByName)]
pub(crate) struct Ranked {
    #[diesel(embed)]
    pub(crate) product: ProductRow,
    #[diesel(sql_type = diesel::sql_types::Float)]
    pub(crate) rank: f32,
}

impl Ranked {
    /// The key of this row for `sort`.
    pub(crate) fn key(&self, sort: ProductSort) -> ListKey {
        let value = match sort {
            ProductSort::Created => serde_json::Value::Null,
            ProductSort::Newest => serde_json::json!(self.product.created_at),
            ProductSort::PriceAsc | ProductSort::PriceDesc => {
                serde_json::json!(self.product.price_amount_minor)
            }
            ProductSort::Name => serde_json::json!(self.product.name),
            ProductSort::Relevance => serde_json::json!(self.rank),
        };
        ListKey {
            sort: sort.as_str().to_owned(),
            id: self.product.id,
            value,
            filters: None,
        }
    }
}

/// The column list of `ProductRow`, for hand-written queries.
const COLUMNS: &str = "id, sku, name, description, price_amount_minor, price_currency, active, \
    created_at, updated_at, category_id, images, attributes, availability";

/// Up to `limit` products matching `filter`, in `sort` order, after `after`.
/// One query; every sort has a keyset (its value, then id) and an index.
///
/// A search of one word in relevance order reads that word's entries in
/// `product_terms`, already in rank order (a range scan of `limit` entries);
/// any other search ranks every match it finds (ADR 0021): in relevance
/// order with no filter, from the vectors alone (`product_search_idx`,
/// ADR 0023), else from the products (`products_search_idx`). The ranks are
/// the same `ts_rank` of the same vectors, so the paths agree.
#[tracing::instrument(name = "catalog.repo.list", skip_all)]
pub(crate) async fn list(
    conn: &mut AsyncPgConnection,
    filter: &ProductFilter,
    sort: ProductSort,
    after: Option<&ListKey>,
    limit: i64,
) -> Result<Vec<Ranked>, ListError> {
    use diesel::sql_types::{BigInt, Bool, Float, Text, Timestamptz, Uuid as SqlUuid};
    const QUERY: &str = "websearch_to_tsquery('english', $1)";
    let q = filter.q.as_deref().map(str::trim);
    // Raw: full-text search, a rank per sort and a keyset over it, built
    // per call (see the module doc). Binds are pushed in placeholder order;
    // $1 is always the query text.
    let mut query = diesel::sql_query(String::new())
        .into_boxed::<Pg>()
        .bind::<Text, _>(q.unwrap_or("").to_owned());
    let mut n = 1;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    // What every branch asks of the product row.
    let mut filters: Vec<String> = Vec::new();
    if let Some(category) = filter.category_id {
        let p = next();
        filters.push(format!(
            "category_id IN (SELECT id FROM categories WHERE id = {p} OR parent_id = {p})"
        ));
        query = query.bind::<SqlUuid, _>(category.as_uuid());
    }
    if let Some(min) = filter.min_price {
        filters.push(format!("price_amount_minor >= {}", next()));
        query = query.bind::<BigInt, _>(min);
    }
    if let Some(max) = filter.max_price {
        filters.push(format!("price_amount_minor <= {}", next()));
        query = query.bind::<BigInt, _>(max);
    }
    if let Some(active) = filter.active {
        filters.push(format!("active = {}", next()));
        query = query.bind::<Bool, _>(active);
    }
    if let Some(in_stock) = filter.in_stock {
        filters.push(if in_stock {
            "availability IN ('in_stock', 'low_stock')".to_owned()
        } else {
            "availability IN ('out_of_stock', 'unknown')".to_owned()
        });
    }
    let (order, keyset) = match sort {
        ProductSort::Created => ("id ASC", "id > {id}"),
        ProductSort::Newest => ("created_at DESC, id DESC", "(created_at, id) < ({v}, {id})"),
        ProductSort::PriceAsc => (
            "price_amount_minor ASC, id ASC",
            "(price_amount_minor, id) > ({v}, {id})",
        ),
        ProductSort::PriceDesc => (
            "price_amount_minor DESC, id DESC",
            "(price_amount_minor, id) < ({v}, {id})",
        ),
        ProductSort::Name => (
            "name COLLATE \"C\" ASC, id ASC",
            "(name COLLATE \"C\", id) > ({v} COLLATE \"C\", {id})",
        ),
        ProductSort::Relevance => (
            "rank DESC, id DESC",
            "(ts_rank(search, websearch_to_tsquery('english', $1)), id) < ({v}, {id})",
        ),
    };
    // The keyset's placeholders: the sort value's (none for `created`), the id's.
    let mut after_key = None;
    if let Some(key) = after {
        let bad = || ListError::Cursor;
        let v = if sort == ProductSort::Created {
            String::new()
        } else {
            next()
        };
        query = match sort {
            ProductSort::Created => query,
            // Years PostgreSQL's timestamps hold all of (chrono's reach
            // further: a forged year -5000 was a failed query, a 500).
            ProductSort::Newest => query.bind::<Timestamptz, _>(
                serde_json::from_value::<DateTime<Utc>>(key.value.clone())
                    .ok()
                    .filter(|at| (1..=9999).contains(&at.year()))
                    .ok_or_else(bad)?,
            ),
            ProductSort::PriceAsc | ProductSort::PriceDesc => {
                query.bind::<BigInt, _>(key.value.as_i64().ok_or_else(bad)?)
            }
            ProductSort::Name => {
                query.bind::<Text, _>(key.value.as_str().ok_or_else(bad)?.to_owned())
            }
            #[expect(
                clippy::cast_possible_truncation,
                reason = "the rank was an f32 when it was written"
            )]
            ProductSort::Relevance => {
                query.bind::<Float, _>(key.value.as_f64().ok_or_else(bad)? as f32)
            }
        };
        let id = next();
        query = query.bind::<SqlUuid, _>(key.id);
        after_key = Some((v, id));
    }
    let l = next();
    query = query.bind::<BigInt, _>(limit);
    let and = |mut conditions: Vec<String>, keyset: &str| {
        conditions.extend(filters.iter().cloned());
        if let Some((v, id)) = &after_key {
            conditions.push(keyset.replace("{v}", v).replace("{id}", id));
        }
        conditions.join(" AND ")
    };
    let sql = match q {
        None => format!(
            "SELECT {COLUMNS}, 0::real AS rank FROM products WHERE {} ORDER BY {order} LIMIT {l}",
            and(vec!["$1 = ''".into()], keyset)
        ),
        Some(_) if !ranks_every_match(filter, sort) => format!(
            "SELECT {COLUMNS}, t.rank FROM product_terms AS t \
             JOIN products ON products.id = t.product_id WHERE {} \
             ORDER BY t.rank DESC, t.product_id DESC LIMIT {l}",
            and(
                vec![format!("t.term = {QUERY}::text")],
                "(t.rank, t.product_id) < ({v}, {id})"
            ),
        ),
        // Every match is ranked in relevance order, with no filter: the
        // vectors alone are read (`product_search`, half the pages of
        // `products`: ADR 0023), then the page's rows by id.
        Some(_) if sort == ProductSort::Relevance && filters.is_empty() => format!(
            "SELECT {COLUMNS}, page.rank FROM \
             (SELECT id, ts_rank(search, {QUERY}) AS rank FROM product_search WHERE {} \
              ORDER BY {order} LIMIT {l}) AS page \
             JOIN products USING (id) ORDER BY {order}",
            and(vec![format!("search @@ {QUERY}")], keyset)
        ),
        // Every match is ranked and sorted, but only as (id, rank): the page's
        // rows are then read by id. Sorting whole rows made PostgreSQL form
        // every match's row (`q=blue teapot`, 2,500 matches: 4.2 -> 3.7 ms).
        Some(_) => format!(
            "SELECT {COLUMNS}, page.rank FROM \
             (SELECT id, ts_rank(search, {QUERY}) AS rank FROM products WHERE {} \
              ORDER BY {order} LIMIT {l}) AS page \
             JOIN products USING (id) ORDER BY {order}",
            and(vec![format!("search @@ {QUERY}")], keyset)
        ),
    };
    query.sql(sql).load(conn).await.map_err(ListError::Db)
}

/// Whether a list reads and ranks every product its search matches: any
/// search but one word in relevance order, which reads that word's ranked
/// entries (ADR 0021). `list` takes its path by this rule, and such lists
/// take their turn in the bulkhead ([`takes_a_search_turn`]).
pub(crate) fn ranks_every_match(filter: &ProductFilter, sort: ProductSort) -> bool {
    filter
        .q
        .as_deref()
        .map(str::trim)
        .is_some_and(|q| !(sort == ProductSort::Relevance && one_word(q)))
}

/// Whether a list takes its turn in the search bulkhead (`searches`): one
/// that ranks every match ([`ranks_every_match`]), or a one-word search
/// with a filter that may pass few products, which reads the word's ranked
/// entries until a page of them passes it: every entry of a common word
/// when it passes few (`q=mug&active=false`), as costly as ranking them.
/// A storefront's own filters, `active=true` and `in_stock=true`, pass most
/// products and take no turn.
pub(crate) fn takes_a_search_turn(filter: &ProductFilter, sort: ProductSort) -> bool {
    let narrowing = filter.category_id.is_some()
        || filter.min_price.is_some()
        || filter.max_price.is_some()
        || filter.active == Some(false)
        || filter.in_stock == Some(false);
    ranks_every_match(filter, sort) || (filter.q.is_some() && narrowing)
}

/// Whether PostgreSQL's `websearch_to_tsquery` makes at most one word of
/// `q`: true for ASCII letters alone (one `asciiword` token, stemmed to one
/// lexeme or dropped as a stop word). Others may still be one word (`café`,
/// `mug2`), but digits can parse as numbers in parts (`09e2I1l` is two) and
/// other letters depend on the server's locale, so they take the path that
/// is right for any query. A stop word finds nothing either way (no entry's
/// term is the empty query's text).
pub(crate) fn one_word(q: &str) -> bool {
    !q.is_empty() && q.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Why a list query failed.
pub(crate) enum ListError {
    /// The cursor's value does not fit its sort.
    Cursor,
    /// A statement failed.
    Db(diesel::result::Error),
}

/// A SKU's availability as a stock event announced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Announced<'a> {
    pub(crate) sku: &'a str,
    pub(crate) availability: Availability,
    /// The stock version it was taken from (`None`: an event published
    /// before events carried versions, taken as it comes).
    pub(crate) version: Option<i64>,
}

/// Takes the availability `announced`, unless a newer stock version was
/// taken already; the id of the product if that changed it
/// ([`set_availabilities`] for one SKU).
#[tracing::instrument(name = "catalog.repo.set_availability", skip_all)]
pub(crate) async fn set_availability(
    conn: &mut AsyncPgConnection,
    announced: Announced<'_>,
) -> QueryResult<Option<ProductId>> {
    Ok(set_availabilities(conn, &[announced])
        .await?
        .into_iter()
        .next()
        .map(|changed| ProductId::from(changed.id)))
}

/// A product whose availability [`set_availabilities`] changed.
#[derive(QueryableByName)]
pub(crate) struct AvailabilityChanged {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub(crate) id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub(crate) sku: String,
}

/// [`set_availability`] for several SKUs (each at most once), in two
/// statements whatever their number: the products it changed.
#[tracing::instrument(name = "catalog.repo.set_availabilities", skip_all, fields(skus = announced.len()))]
pub(crate) async fn set_availabilities(
    conn: &mut AsyncPgConnection,
    announced: &[Announced<'_>],
) -> QueryResult<Vec<AvailabilityChanged>> {
    use diesel::sql_types::{Array, BigInt, Nullable, Text};
    let skus: Vec<&str> = announced.iter().map(|a| a.sku).collect();
    let values: Vec<&str> = announced.iter().map(|a| a.availability.as_str()).collect();
    let versions: Vec<Option<i64>> = announced.iter().map(|a| a.version).collect();
    // Raw: diesel's query builder has no upsert returning into an UPDATE
    // ... FROM. Every SKU's level is kept in `sku_availability`, sold here
    // or not (yet): a product created later starts from it (a trigger on
    // `products`). Its `stock_version` is the newest taken: an older event
    // (delivered out of order by the broker, or redriven) changes nothing,
    // and the version of every newer one is kept even when the
    // availability stays (else a late older event would pass it). Events
    // from before versions (`NULL`) are taken as they come, as they were.
    #[derive(QueryableByName)]
    struct Taken {
        #[diesel(sql_type = Text)]
        sku: String,
        #[diesel(sql_type = Text)]
        availability: String,
    }
    let taken: Vec<Taken> = db::sql(
        "INSERT INTO catalog.sku_availability AS k (sku, availability, stock_version) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) \
         ON CONFLICT (sku) DO UPDATE SET availability = excluded.availability, \
         stock_version = GREATEST(k.stock_version, excluded.stock_version), updated_at = now() \
         WHERE excluded.stock_version > k.stock_version \
         OR excluded.stock_version IS NULL OR k.stock_version IS NULL \
         RETURNING k.sku, k.availability",
    )
    .bind::<Array<Text>, _>(skus)
    .bind::<Array<Text>, _>(values)
    .bind::<Array<Nullable<BigInt>>, _>(versions)
    .load(conn)
    .await?;
    if taken.is_empty() {
        return Ok(Vec::new());
    }
    let (skus, values): (Vec<String>, Vec<String>) =
        taken.into_iter().map(|t| (t.sku, t.availability)).unzip();
    // A statement of its own, so a snapshot of its own: taken after the
    // upsert above waited for (and so saw) any other handler of these SKUs
    // that committed meanwhile. In the upsert's statement, the products
    // would be compared with the snapshot from before that wait, and a row
    // the other handler changed would be skipped as already right. The
    // product changes only with its availability (no rewrite, no id
    // returned, so the cached entry stays: a best-seller's stock changes on
    // every checkout, its availability seldom).
    db::sql(
        "UPDATE catalog.products AS p SET availability = v.availability \
         FROM unnest($1::text[], $2::text[]) AS v(sku, availability) \
         WHERE p.sku = v.sku AND p.availability <> v.availability \
         RETURNING p.id, p.sku",
    )
    .bind::<Array<Text>, _>(skus)
    .bind::<Array<Text>, _>(values)
    .load(conn)
    .await
}

/// Applies a patch; `None` when the product does not exist.
#[tracing::instrument(name = "catalog.repo.update", skip_all)]
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
        category_id: patch.category_id.map(|c| c.map(|c| c.as_uuid())),
        images: patch.images.as_deref(),
        attributes: patch.attributes.as_ref(),
    };
    diesel::update(products::table.find(id.as_uuid()))
        .set((changes, products::updated_at.eq(diesel::dsl::now)))
        .returning(ProductRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

#[cfg(test)]
mod tests {
    use super::one_word;

    #[test]
    fn only_ascii_letters_are_surely_one_word() {
        for word in ["mug", "Teapots", "OR", "the", "x"] {
            assert!(one_word(word), "{word}");
        }
        for query in [
            "", "blue mug", "-mug", "\"mug\"", "mug2", "09e2I1l", "S-4", "café", "mug\u{0}",
        ] {
            assert!(!one_word(query), "{query:?}");
        }
    }
}
