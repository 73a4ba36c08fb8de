//! The `carts` table: one row per customer, the items as JSON.

use diesel::QueryResult;
use diesel::sql_types::{Jsonb, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// The items of `customer`'s cart as stored, if it was ever set.
pub(crate) async fn items(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
) -> QueryResult<Option<serde_json::Value>> {
    #[derive(diesel::QueryableByName)]
    struct Items {
        #[diesel(sql_type = Jsonb)]
        items: serde_json::Value,
    }
    let found: Vec<Items> = db::sql("SELECT items FROM carts WHERE customer_id = $1")
        .bind::<SqlUuid, _>(customer)
        .load(conn)
        .await?;
    Ok(found.into_iter().next().map(|row| row.items))
}

/// Replaces the items of `customer`'s cart.
pub(crate) async fn put(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
    items: serde_json::Value,
) -> QueryResult<()> {
    db::sql(
        "INSERT INTO carts (customer_id, items) VALUES ($1, $2) \
         ON CONFLICT (customer_id) DO UPDATE SET items = EXCLUDED.items, updated_at = now()",
    )
    .bind::<SqlUuid, _>(customer)
    .bind::<Jsonb, _>(items)
    .execute(conn)
    .await
    .map(drop)
}

/// Empties `customer`'s cart (the order took it).
pub(crate) async fn delete(conn: &mut AsyncPgConnection, customer: Uuid) -> QueryResult<()> {
    db::sql("DELETE FROM carts WHERE customer_id = $1")
        .bind::<SqlUuid, _>(customer)
        .execute(conn)
        .await
        .map(drop)
}
