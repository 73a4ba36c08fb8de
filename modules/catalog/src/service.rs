//! [`CatalogModule`]: the in-process implementation of [`CatalogApi`].

use catalog_api::events::{ProductCreated, ProductPriceChanged, ProductUpdated};
use catalog_api::{
    CatalogApi, CatalogError, ListProducts, NewProduct, Product, ProductId, ProductPatch,
};
use db::{Pool, PoolError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncConnection as _;
use kernel::{CallContext, Cursor, Page, Role};

use crate::domain::{validate_new, validate_patch};
use crate::repo::{self, ProductRow};

/// The catalog, served from this process's database pool.
#[derive(Clone)]
pub struct CatalogModule {
    pool: Pool,
}

impl CatalogModule {
    /// The catalog over its own connection pool.
    pub fn new(pool: Pool) -> CatalogModule {
        CatalogModule { pool }
    }

    /// The module's pool (for readiness checks and metrics).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn conn(&self) -> Result<db::Object, CatalogError> {
        self.pool.get().await.map_err(unavailable)
    }
}

fn unavailable(error: PoolError) -> CatalogError {
    tracing::warn!(error = %error, "catalog database unavailable");
    CatalogError::Unavailable("the catalog database is unavailable".to_owned())
}

fn database(error: DieselError) -> CatalogError {
    match db::unavailable_reason(&error) {
        Some(reason) => CatalogError::Unavailable(format!("the catalog database {reason}")),
        None => CatalogError::Unexpected(format!("catalog database error: {error}")),
    }
}

/// Writes are for admins, whoever calls: the HTTP edge checks it too.
fn require_admin(cx: &CallContext) -> Result<(), CatalogError> {
    match cx.caller() {
        None => Err(CatalogError::Unauthenticated),
        Some(caller) if !caller.has(Role::Admin) => Err(CatalogError::Forbidden),
        Some(_) => Ok(()),
    }
}

fn to_product(row: ProductRow) -> Result<Product, CatalogError> {
    row.into_product().map_err(CatalogError::Unexpected)
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
        let valid = validate_new(new).map_err(CatalogError::Validation)?;
        let mut conn = self.conn().await?;
        let id = ProductId::generate();
        let row = conn
            .transaction::<_, DieselError, _>(async |conn| {
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
                DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
                    if info.constraint_name() == Some(repo::SKU_UNIQUE) =>
                {
                    CatalogError::DuplicateSku(valid.sku.to_string())
                }
                other => database(other),
            })?;
        tracing::info!(product.id = %id, "product created");
        to_product(row)
    }

    #[tracing::instrument(skip_all, fields(product.id = %id))]
    async fn get_product(&self, _cx: &CallContext, id: ProductId) -> Result<Product, CatalogError> {
        let mut conn = self.conn().await?;
        let row = repo::find(&mut conn, id)
            .await
            .map_err(database)?
            .ok_or(CatalogError::ProductNotFound(id))?;
        to_product(row)
    }

    #[tracing::instrument(skip_all, fields(limit = query.limit.get()))]
    async fn list_products(
        &self,
        _cx: &CallContext,
        query: ListProducts,
    ) -> Result<Page<Product>, CatalogError> {
        let after =
            Cursor::after_id(query.cursor.as_ref()).map_err(|_| CatalogError::InvalidCursor)?;
        let mut conn = self.conn().await?;
        let rows = repo::list(&mut conn, after, query.limit.overfetch())
            .await
            .map_err(database)?
            .into_iter()
            .map(to_product)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(rows, query.limit, |p| p.id.as_uuid()))
    }

    #[tracing::instrument(skip_all, fields(product.id = %id))]
    async fn update_product(
        &self,
        cx: &CallContext,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Product, CatalogError> {
        require_admin(cx)?;
        let valid = validate_patch(patch).map_err(CatalogError::Validation)?;
        let mut conn = self.conn().await?;
        let row = conn
            .transaction::<_, DieselError, _>(async |conn| {
                let Some(before) = repo::find_for_update(conn, id).await? else {
                    return Ok(None);
                };
                let Some(after) = repo::update(conn, id, &valid).await? else {
                    return Ok(None);
                };
                let (Ok(before), Ok(now)) = (before.into_product(), after.clone().into_product())
                else {
                    return Ok(Some(after));
                };
                let updated = ProductUpdated {
                    product_id: id,
                    sku: now.sku.clone(),
                    name: now.name.clone(),
                    price: now.price,
                    active: now.active,
                };
                events::outbox::publish(conn, crate::NAME, cx, &updated).await?;
                if before.price != now.price {
                    let changed = ProductPriceChanged {
                        product_id: id,
                        sku: now.sku,
                        name: now.name,
                        old_price: before.price,
                        new_price: now.price,
                    };
                    events::outbox::publish(conn, crate::NAME, cx, &changed).await?;
                }
                Ok(Some(after))
            })
            .await
            .map_err(database)?
            .ok_or(CatalogError::ProductNotFound(id))?;
        tracing::info!("product updated");
        to_product(row)
    }
}
