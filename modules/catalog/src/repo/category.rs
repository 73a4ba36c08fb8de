//! `catalog.categories`: the category tree, read and extended.

use catalog_api::{Category, CategoryId};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::categories;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = categories)]
pub(crate) struct CategoryRow {
    id: Uuid,
    name: String,
    slug: String,
    parent_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

impl CategoryRow {
    pub(crate) fn into_category(self) -> Category {
        Category {
            id: CategoryId::from(self.id),
            name: self.name,
            slug: self.slug,
            parent_id: self.parent_id.map(CategoryId::from),
            children: Vec::new(),
            created_at: self.created_at,
        }
    }

    pub(crate) fn parent_id(&self) -> Option<Uuid> {
        self.parent_id
    }
}

/// Unique constraint on slugs.
pub(crate) const SLUG_UNIQUE: &str = "categories_slug_key";

/// The category `id`, if it exists.
#[tracing::instrument(name = "catalog.repo.find_category", skip_all)]
pub(crate) async fn find_category(
    conn: &mut AsyncPgConnection,
    id: CategoryId,
) -> QueryResult<Option<CategoryRow>> {
    categories::table
        .find(id.as_uuid())
        .select(CategoryRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Inserts a category.
#[tracing::instrument(name = "catalog.repo.insert_category", skip_all)]
pub(crate) async fn insert_category(
    conn: &mut AsyncPgConnection,
    name: &str,
    slug: &str,
    parent: Option<CategoryId>,
) -> QueryResult<CategoryRow> {
    diesel::insert_into(categories::table)
        .values((
            categories::id.eq(Uuid::now_v7()),
            categories::name.eq(name),
            categories::slug.eq(slug),
            categories::parent_id.eq(parent.map(|p| p.as_uuid())),
        ))
        .returning(CategoryRow::as_returning())
        .get_result(conn)
        .await
}

/// Every category, by name.
#[tracing::instrument(name = "catalog.repo.all_categories", skip_all)]
pub(crate) async fn all_categories(conn: &mut AsyncPgConnection) -> QueryResult<Vec<CategoryRow>> {
    categories::table
        .select(CategoryRow::as_select())
        .order((categories::name.asc(), categories::id.asc()))
        .load(conn)
        .await
}
