//! [`Observed`]: any [`CatalogApi`] with a span and RED metrics per call
//! (`kernel::observe`), the same whichever implementation it wraps.

use std::sync::Arc;

use super::*;

/// Wraps an implementation of [`CatalogApi`] so that every call is observed
/// under the module name `catalog`.
pub struct Observed(pub Arc<dyn CatalogApi>);

#[async_trait::async_trait]
impl CatalogApi for Observed {
    async fn create_product(
        &self,
        cx: &CallContext,
        new: NewProduct,
    ) -> Result<Product, CatalogError> {
        kernel::observe::module_call("catalog", "create_product", self.0.create_product(cx, new))
            .await
    }

    async fn get_product(&self, cx: &CallContext, id: ProductId) -> Result<Product, CatalogError> {
        kernel::observe::module_call("catalog", "get_product", self.0.get_product(cx, id)).await
    }

    async fn list_products(
        &self,
        cx: &CallContext,
        query: ListProducts,
    ) -> Result<Page<Product>, CatalogError> {
        kernel::observe::module_call("catalog", "list_products", self.0.list_products(cx, query))
            .await
    }

    async fn update_product(
        &self,
        cx: &CallContext,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Product, CatalogError> {
        kernel::observe::module_call(
            "catalog",
            "update_product",
            self.0.update_product(cx, id, patch),
        )
        .await
    }

    async fn create_category(
        &self,
        cx: &CallContext,
        new: NewCategory,
    ) -> Result<Category, CatalogError> {
        kernel::observe::module_call(
            "catalog",
            "create_category",
            self.0.create_category(cx, new),
        )
        .await
    }

    async fn list_categories(&self, cx: &CallContext) -> Result<Vec<Category>, CatalogError> {
        kernel::observe::module_call("catalog", "list_categories", self.0.list_categories(cx)).await
    }
}
