//! [`Observed`]: any [`CatalogApi`] with a span and RED metrics per call
//! (`kernel::observe`), the same whichever implementation it wraps.

use super::*;

kernel::observed!("catalog", CatalogApi, CatalogError, {
    fn create_product(new: NewProduct) -> Product;
    fn get_product(id: ProductId) -> Product;
    fn get_product_or_last_known(id: ProductId) -> Fetched;
    fn list_products(query: ListProducts) -> Page<Product>;
    fn update_product(id: ProductId, patch: ProductPatch) -> Product;
    fn create_category(new: NewCategory) -> Category;
    fn list_categories() -> Vec<Category>;
});
