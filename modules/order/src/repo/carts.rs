//! The `carts` table: one row per customer, the items as JSON. Diesel's
//! query builder throughout.

use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

diesel::table! {
    orders.carts (customer_id) {
        customer_id -> Uuid,
        items -> Jsonb,
        updated_at -> Timestamptz,
    }
}

/// The items of `customer`'s cart as stored, if it was ever set.
pub(crate) async fn items(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
) -> QueryResult<Option<serde_json::Value>> {
    carts::table
        .find(customer)
        .select(carts::items)
        .first(conn)
        .await
        .optional()
}

/// The items of `customer`'s cart, its row locked until the transaction
/// ends (made, empty, if there was none: the lock then holds a row too).
/// One statement: made, or found and locked, atomically. (An insert that
/// did nothing and then a `SELECT ... FOR UPDATE` found no row when a
/// checkout took the cart between the two: a 500.)
pub(crate) async fn lock(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
) -> QueryResult<serde_json::Value> {
    db::cached(
        diesel::insert_into(carts::table)
            .values((
                carts::customer_id.eq(customer),
                carts::items.eq(serde_json::Value::Array(Vec::new())),
            ))
            .on_conflict(carts::customer_id)
            // Changes nothing; locks the row as `FOR UPDATE` would.
            .do_update()
            .set(carts::items.eq(carts::items))
            .returning(carts::items),
    )
    .get_result(conn)
    .await
}

/// Replaces the items of `customer`'s cart.
pub(crate) async fn put(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
    items: serde_json::Value,
) -> QueryResult<()> {
    db::cached(
        diesel::insert_into(carts::table)
            .values((carts::customer_id.eq(customer), carts::items.eq(items)))
            .on_conflict(carts::customer_id)
            .do_update()
            .set((
                carts::items.eq(excluded(carts::items)),
                carts::updated_at.eq(diesel::dsl::now),
            )),
    )
    .execute(conn)
    .await
    .map(drop)
}

/// Empties `customer`'s cart if it still holds `items` (the order took
/// them); false when it was emptied or changed meanwhile (another order
/// took it, a `PUT /cart` replaced it): nothing is deleted then.
pub(crate) async fn take(
    mut conn: &AsyncPgConnection,
    customer: Uuid,
    items: &serde_json::Value,
) -> QueryResult<bool> {
    db::cached(diesel::delete(carts::table.find(customer)).filter(carts::items.eq(items)))
        .execute(&mut conn)
        .await
        .map(|deleted| deleted == 1)
}
