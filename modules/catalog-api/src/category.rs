//! Categories: a tree one level deep.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Identifier of a category.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = Uuid)]
pub struct CategoryId(Uuid);

impl CategoryId {
    /// A new, time-ordered id.
    pub fn generate() -> CategoryId {
        CategoryId(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for CategoryId {
    fn from(id: Uuid) -> CategoryId {
        CategoryId(id)
    }
}

impl fmt::Display for CategoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A category, with its subcategories when it is a top-level one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Category {
    /// Category id.
    pub id: CategoryId,
    /// Display name.
    pub name: String,
    /// URL-friendly unique name (`kitchen-mugs`).
    pub slug: String,
    /// The parent, for a subcategory.
    pub parent_id: Option<CategoryId>,
    /// Subcategories (always empty for a subcategory: one level of nesting).
    #[schema(no_recursion)]
    pub children: Vec<Category>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A category to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Mugs", "slug": "mugs", "parent_id": null}))]
pub struct NewCategory {
    /// Display name, 1 to 100 characters not counting surrounding whitespace.
    #[schema(
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[\s\S]{0,98}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub name: String,
    /// Lower-case letters and digits in words joined by single dashes, at
    /// most 100 characters; unique.
    #[schema(max_length = 100, pattern = r"^[a-z0-9]+(-[a-z0-9]+)*$")]
    pub slug: String,
    /// A top-level category to nest under (subcategories cannot have children).
    #[serde(default)]
    pub parent_id: Option<CategoryId>,
}
