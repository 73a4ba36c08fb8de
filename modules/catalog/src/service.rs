//! [`CatalogModule`]: the in-process implementation of [`CatalogApi`].

use std::sync::Arc;

use catalog_api::events::{ProductCreated, ProductPriceChanged, ProductUpdated};
use catalog_api::{
    CatalogApi, CatalogError, Category, CategoryId, Fetched, ListProducts, NewCategory, NewProduct,
    Product, ProductId, ProductPatch,
};
use db::Pool;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncConnection as _;
use kernel::FieldError;
use kernel::{CallContext, Cursor, Failure, Page, Role};
use web::etag::IfMatch;

use crate::cache::{CachedProduct, ProductCache};
use crate::domain::{validate_category, validate_listing, validate_new, validate_patch};
use crate::repo::{self, ProductRow};
use crate::searches::Searches;

/// The catalog, served from this process's database pool.
#[derive(Clone)]
pub struct CatalogModule {
    pool: Pool,
    cache: ProductCache,
    searches: Searches,
}

impl CatalogModule {
    /// The catalog over its own connection pool, reading through `cache`;
    /// the searches that rank every match take turns in `searches`.
    pub fn new(pool: Pool, cache: ProductCache, searches: Searches) -> CatalogModule {
        CatalogModule {
            pool,
            cache,
            searches,
        }
    }

    /// A product with its representation (JSON and `ETag`), through the
    /// cache: what `GET /api/v1/products/{id}` sends, and what
    /// [`CatalogApi::get_product`] clones its answer from.
    ///
    /// # Errors
    /// No such product, or the database cannot answer.
    #[tracing::instrument(name = "get_product", skip_all, fields(product.id = %id))]
    pub async fn product(&self, id: ProductId) -> Result<Arc<CachedProduct>, CatalogError> {
        self.cache
            .get_or_load(id, || async {
                let mut conn = self.conn().await?;
                let row = repo::find(&mut conn, id, false)
                    .await
                    .map_err(database)?
                    .ok_or(CatalogError::ProductNotFound(id))?;
                to_product(row)
            })
            .await
    }

    /// Changes a product (merge patch), if it is still the version
    /// `if_match` names (`412` otherwise: changed since the caller read it);
    /// what `PATCH /products/{id}` runs, and
    /// [`CatalogApi::update_product`] without a condition.
    ///
    /// # Errors
    /// As [`CatalogApi::update_product`], and
    /// [`Failure::PreconditionFailed`].
    #[tracing::instrument(skip_all, fields(product.id = %id))]
    pub async fn update_product_if(
        &self,
        cx: &CallContext,
        id: ProductId,
        patch: ProductPatch,
        if_match: &IfMatch,
    ) -> Result<Product, CatalogError> {
        require_admin(cx)?;
        let valid = validate_patch(patch).map_err(Failure::Validation)?;
        let mut conn = self.conn().await?;
        let row = conn
            .transaction::<_, Abort, _>(async |conn| {
                if let Some(category) = valid.category_id {
                    check_category(conn, category).await?;
                }
                let Some(before) = repo::find(conn, id, true).await? else {
                    return Ok(None);
                };
                if if_match.0.is_some() {
                    // The version a GET would show now, tagged as it is.
                    let current = to_product(before.clone())
                        .and_then(CachedProduct::new)
                        .map_err(Abort::Refuse)?;
                    if !if_match.allows(&current.etag) {
                        return Err(Abort::Refuse(CatalogError::Common(
                            Failure::PreconditionFailed,
                        )));
                    }
                }
                let Some(after) = repo::update(conn, id, &valid).await? else {
                    return Ok(None);
                };
                // Every change publishes its events in its transaction. The
                // row as written must read as a product (the patch was valid):
                // if it does not, that is a bug, and nothing is kept.
                let now = to_product(after.clone()).map_err(Abort::Refuse)?;
                let updated = ProductUpdated {
                    product_id: id,
                    sku: now.sku.clone(),
                    name: now.name.clone(),
                    price: now.price,
                    active: now.active,
                };
                let mut batch = events::outbox::Batch::new(crate::NAME, cx);
                batch.push(&updated)?;
                match before.into_product() {
                    Ok(before) if before.price != now.price => {
                        let changed = ProductPriceChanged {
                            product_id: id,
                            sku: now.sku,
                            name: now.name,
                            old_price: before.price,
                            new_price: now.price,
                            active: now.active,
                        };
                        batch.push(&changed)?;
                    }
                    Ok(_) => {}
                    // The row as it was may not read as a product: values the
                    // table's CHECKs take and the domain refuses (a currency
                    // outside the kernel's ISO list, loaded by SQL). Its
                    // correction is announced all the same (`ProductUpdated`,
                    // the state after it); with no old price the domain can
                    // compare, no price change is announced.
                    Err(e) => tracing::warn!(
                        error = %e,
                        "the product as stored did not read as a product: \
                         updated without announcing a price change"
                    ),
                }
                batch.write(conn).await?;
                Ok(Some(after))
            })
            .await
            .map_err(|e| e.into_error(crate::NAME))?
            .ok_or(CatalogError::ProductNotFound(id))?;
        // Visible to the next read here; other instances hear the event.
        events::outbox::wake(crate::NAME);
        self.cache.invalidate(id).await;
        tracing::info!("product updated");
        to_product(row)
    }

    /// The product cache (shared with the catalog's event handler).
    pub fn cache(&self) -> &ProductCache {
        &self.cache
    }

    /// The module's pool (for readiness checks and metrics).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn conn(&self) -> Result<db::Object, CatalogError> {
        db::checkout(&self.pool, crate::NAME).await
    }
}

/// A failed statement, as this module answers it (`db::query_failure`:
/// 503 when the database cannot answer now, 500 otherwise).
fn database(error: DieselError) -> CatalogError {
    db::query_failure(crate::NAME, error)
}

/// Writes are for admins, whoever calls: the HTTP edge checks it too.
fn require_admin(cx: &CallContext) -> Result<(), CatalogError> {
    match cx.caller() {
        None => Err(CatalogError::Common(Failure::Unauthenticated)),
        Some(caller) if !caller.has(Role::Admin) => Err(CatalogError::Common(Failure::Forbidden)),
        Some(_) => Ok(()),
    }
}

/// A category id that names no category is an invalid field.
/// Why a catalog transaction ended without committing.
type Abort = db::Abort<CatalogError>;

/// Refuses the transaction when `id` names no category.
async fn check_category(
    conn: &mut db::AsyncPgConnection,
    id: Option<CategoryId>,
) -> Result<(), Abort> {
    match id {
        Some(id) if repo::find_category(conn, id).await?.is_none() => {
            Err(Abort::Refuse(no_such_category()))
        }
        _ => Ok(()),
    }
}

fn no_such_category() -> CatalogError {
    CatalogError::Common(Failure::Validation(vec![FieldError::new(
        "category_id",
        "no such category",
    )]))
}

fn to_product(row: ProductRow) -> Result<Product, CatalogError> {
    row.into_product()
        .map_err(|e| Failure::Unexpected(e).into())
}

#[async_trait::async_trait]
impl CatalogApi for CatalogModule {
    #[tracing::instrument(skip_all, fields(product.sku = %new.sku))]
    async fn create_product(
        &self,
        cx: &CallContext,
        new: NewProduct,
    ) -> Result<Product, CatalogError> {
        require_admin(cx)?;
        let valid = validate_new(new).map_err(Failure::Validation)?;
        let mut conn = self.conn().await?;
        let id = ProductId::generate();
        let row = conn
            .transaction::<_, Abort, _>(async |conn| {
                check_category(conn, valid.category_id).await?;
                let row = repo::insert(conn, id, &valid).await?;
                let event = ProductCreated {
                    product_id: id,
                    sku: valid.sku.clone(),
                    name: valid.name.clone(),
                    price: valid.price,
                    active: valid.active,
                };
                events::outbox::publish(conn, crate::NAME, cx, &event).await?;
                Ok(row)
            })
            .await
            .map_err(|e| match e {
                Abort::Db(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info))
                    if info.constraint_name() == Some(repo::SKU_UNIQUE) =>
                {
                    CatalogError::DuplicateSku(valid.sku.to_string())
                }
                other => other.into_error(crate::NAME),
            })?;
        events::outbox::wake(crate::NAME);
        tracing::info!(product.id = %id, "product created");
        to_product(row)
    }

    async fn get_product(&self, _cx: &CallContext, id: ProductId) -> Result<Product, CatalogError> {
        Ok(self.product(id).await?.product.clone())
    }

    async fn get_product_or_last_known(
        &self,
        cx: &CallContext,
        id: ProductId,
    ) -> Result<Fetched, CatalogError> {
        // In process: no older version to fall back to than this answer.
        let product = self.get_product(cx, id).await?;
        Ok(Fetched {
            product,
            stale: false,
        })
    }

    #[tracing::instrument(skip_all, fields(limit = query.limit.get()))]
    async fn list_products(
        &self,
        _cx: &CallContext,
        query: ListProducts,
    ) -> Result<Page<Product>, CatalogError> {
        let sort = validate_listing(&query.filter, query.sort).map_err(Failure::Validation)?;
        let after = match &query.cursor {
            Some(cursor) => {
                let key: repo::ListKey = cursor
                    .decode()
                    .map_err(|_| CatalogError::Common(Failure::InvalidCursor))?;
                let other_filters = key
                    .filters
                    .as_ref()
                    .is_some_and(|f| *f != repo::filters_of(&query.filter));
                if key.sort != sort.as_str() || other_filters {
                    return Err(CatalogError::Common(Failure::InvalidCursor));
                }
                Some(key)
            }
            None => None,
        };
        let limit = usize::from(query.limit.get());
        // Its turn before its connection: waiting searches hold none.
        let _turn = if repo::takes_a_search_turn(&query.filter, sort) {
            Some(self.searches.turn().await?)
        } else {
            None
        };
        let mut conn = self.conn().await?;
        let mut rows = repo::list(
            &mut conn,
            &query.filter,
            sort,
            after.as_ref(),
            query.limit.overfetch(),
        )
        .await
        .map_err(|e| match e {
            repo::ListError::Cursor => CatalogError::Common(Failure::InvalidCursor),
            repo::ListError::Db(e) => database(e),
        })?;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = match rows.last() {
            Some(last) if has_more => {
                let mut key = last.key(sort);
                key.filters = Some(repo::filters_of(&query.filter));
                Some(Cursor::encode(&key))
            }
            _ => None,
        };
        let items = rows
            .into_iter()
            .map(|r| to_product(r.product))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, next_cursor })
    }

    async fn update_product(
        &self,
        cx: &CallContext,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Product, CatalogError> {
        self.update_product_if(cx, id, patch, &IfMatch::default())
            .await
    }
    #[tracing::instrument(skip_all, fields(category.slug = %new.slug))]
    async fn create_category(
        &self,
        cx: &CallContext,
        new: NewCategory,
    ) -> Result<Category, CatalogError> {
        require_admin(cx)?;
        let valid = validate_category(new).map_err(Failure::Validation)?;
        let mut conn = self.conn().await?;
        if let Some(parent) = valid.parent_id {
            let found = repo::find_category(&mut conn, parent)
                .await
                .map_err(database)?;
            let problem = match found {
                None => Some("no such category"),
                Some(p) if p.parent_id().is_some() => {
                    Some("is itself a subcategory: categories nest one level")
                }
                Some(_) => None,
            };
            if let Some(message) = problem {
                return Err(CatalogError::Common(Failure::Validation(vec![
                    FieldError::new("parent_id", message),
                ])));
            }
        }
        let row = repo::insert_category(&mut conn, &valid.name, &valid.slug, valid.parent_id)
            .await
            .map_err(|e| match e {
                DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
                    if info.constraint_name() == Some(repo::SLUG_UNIQUE) =>
                {
                    CatalogError::DuplicateSlug(valid.slug.clone())
                }
                other => database(other),
            })?;
        tracing::info!("category created");
        Ok(row.into_category())
    }

    async fn list_categories(&self, _cx: &CallContext) -> Result<Vec<Category>, CatalogError> {
        let mut conn = self.conn().await?;
        let rows = repo::all_categories(&mut conn).await.map_err(database)?;
        let all: Vec<Category> = rows
            .into_iter()
            .map(repo::CategoryRow::into_category)
            .collect();
        let mut tree: Vec<Category> = all
            .iter()
            .filter(|c| c.parent_id.is_none())
            .cloned()
            .collect();
        for top in &mut tree {
            top.children = all
                .iter()
                .filter(|c| c.parent_id == Some(top.id))
                .cloned()
                .collect();
        }
        Ok(tree)
    }
}
