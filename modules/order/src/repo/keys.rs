//! The `idempotency_keys` table: one row per customer and key, holding the
//! request's fingerprint, the order it created and the response to replay.
//! Diesel's query builder, but for the two statements that judge a key's
//! age by the database's clock (their reasons are beside them).

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Jsonb, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kernel::OrderId;
use uuid::Uuid;

use crate::checkout::Claim;

diesel::table! {
    orders.idempotency_keys (customer_id, key) {
        customer_id -> Uuid,
        key -> Text,
        fingerprint -> Text,
        order_id -> Nullable<Uuid>,
        response_status -> Nullable<Integer>,
        response_body -> Nullable<Jsonb>,
        created_at -> Timestamptz,
    }
}

use idempotency_keys as keys;

/// A key as stored, with its age judged by the database's clock.
pub(crate) struct KeyRow {
    pub(crate) fingerprint: String,
    pub(crate) order_id: Option<Uuid>,
    pub(crate) response_status: Option<i32>,
    pub(crate) response_body: Option<serde_json::Value>,
    /// Older than the stale threshold: its first request died mid-way.
    pub(crate) stale: bool,
    /// Older than 24 hours: the key is new again.
    pub(crate) expired: bool,
}

/// The columns of a key taken by a claim.
type Taken<'a> = (
    diesel::dsl::Eq<keys::customer_id, Uuid>,
    diesel::dsl::Eq<keys::key, &'a str>,
    diesel::dsl::Eq<keys::fingerprint, &'a str>,
);

/// The columns of a key's kept answer.
type Answer<'a> = (
    diesel::dsl::Eq<keys::response_status, i32>,
    diesel::dsl::Eq<keys::response_body, &'a serde_json::Value>,
);

/// The columns of a key taken by `claim`.
fn taken<'a>(claim: &Claim<'a>) -> Taken<'a> {
    (
        keys::customer_id.eq(claim.customer),
        keys::key.eq(claim.key),
        keys::fingerprint.eq(claim.fingerprint),
    )
}

/// The columns of a key's kept answer.
fn answer(status: u16, body: &serde_json::Value) -> Answer<'_> {
    (
        keys::response_status.eq(i32::from(status)),
        keys::response_body.eq(body),
    )
}

/// Takes the key for the order its request creates (in that order's
/// transaction); false when it is taken (a request with the same key
/// in flight waits for the other's transaction first).
pub(crate) async fn claim_for(
    mut conn: &AsyncPgConnection,
    claim: &Claim<'_>,
    order: OrderId,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(keys::table)
        .values((taken(claim), keys::order_id.eq(order.as_uuid())))
        .on_conflict_do_nothing()
        .execute(&mut conn)
        .await?;
    Ok(inserted == 1)
}

/// Takes the key with the answer its request got instead of an order (a
/// 4xx); false when it is taken.
pub(crate) async fn claim_answered(
    conn: &mut AsyncPgConnection,
    claim: &Claim<'_>,
    status: u16,
    body: &serde_json::Value,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(keys::table)
        .values((taken(claim), answer(status, body)))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// A key's columns where it may be missing, and a cart's items: what
/// [`find_with_cart`] reads in one statement.
#[derive(diesel::QueryableByName)]
struct KeyAndCart {
    #[diesel(sql_type = Nullable<Text>)]
    fingerprint: Option<String>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    order_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Integer>)]
    response_status: Option<i32>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    response_body: Option<serde_json::Value>,
    #[diesel(sql_type = Nullable<Bool>)]
    stale: Option<bool>,
    #[diesel(sql_type = Nullable<Bool>)]
    expired: Option<bool>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    cart: Option<serde_json::Value>,
}

/// The key as stored (stale after `stale_secs`) and the items of `customer`'s cart (if it
/// was ever set), in one statement: what placing an order reads first
/// (one round trip and one transaction where two would do, ADR 0015).
pub(crate) async fn find_with_cart(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
    key: &str,
    stale_secs: u64,
) -> QueryResult<(Option<KeyRow>, Option<serde_json::Value>)> {
    // Raw: the key's ages are `now() - interval` on the database's clock,
    // which the query builder only has for `timestamp`, not `timestamptz`;
    // and a row comes back whatever is found (a left join from no table).
    let row: KeyAndCart = db::sql(format!(
        "SELECT k.fingerprint, k.order_id, k.response_status, k.response_body, \
         k.created_at < now() - interval '{stale_secs} seconds' AS stale, \
         k.created_at < now() - interval '24 hours' AS expired, \
         (SELECT items FROM carts WHERE customer_id = $1) AS cart \
         FROM (SELECT) AS one \
         LEFT JOIN idempotency_keys k ON k.customer_id = $1 AND k.key = $2"
    ))
    .bind::<SqlUuid, _>(customer)
    .bind::<Text, _>(key)
    .get_result(conn)
    .await?;
    let key = row.fingerprint.map(|fingerprint| KeyRow {
        fingerprint,
        order_id: row.order_id,
        response_status: row.response_status,
        response_body: row.response_body,
        stale: row.stale.unwrap_or(false),
        expired: row.expired.unwrap_or(false),
    });
    Ok((key, row.cart))
}

/// The key as stored; stale after `stale_secs`. The statement of
/// [`find_with_cart`], so the key's ages are judged in one place (the
/// cart's sub-select by primary key is read and dropped: this is the rare
/// path of a key another request took meanwhile).
pub(crate) async fn find(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
    key: &str,
    stale_secs: u64,
) -> QueryResult<Option<KeyRow>> {
    Ok(find_with_cart(conn, customer, key, stale_secs).await?.0)
}

/// Which stored key [`forget`] frees: only the one found, never a fresh
/// claim another request made under the same key since.
#[derive(Clone, Copy)]
pub(crate) enum Forget {
    /// Past its 24 hours.
    Expired,
    /// Taken by an older version before its order, with no order or
    /// answer, and older than `stale_secs`.
    Abandoned { stale_secs: u64 },
}

/// Frees the key, if it is still the one `which` describes: a request
/// that found it expired (or abandoned) and frees it after another request
/// claimed the key afresh must leave that claim alone (deleting it let a
/// third request answer "cart is empty" for good under a key whose order
/// exists).
pub(crate) async fn forget(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
    key: &str,
    which: Forget,
) -> QueryResult<()> {
    // Raw: ages on the database's clock, as `find_with_cart` judges them.
    let condition = match which {
        Forget::Expired => "created_at < now() - interval '24 hours'".to_owned(),
        Forget::Abandoned { stale_secs } => format!(
            "created_at < now() - interval '{stale_secs} seconds' \
             AND order_id IS NULL AND response_status IS NULL"
        ),
    };
    db::sql(format!(
        "DELETE FROM idempotency_keys WHERE customer_id = $1 AND key = $2 AND {condition}"
    ))
    .bind::<SqlUuid, _>(customer)
    .bind::<Text, _>(key)
    .execute(conn)
    .await
    .map(drop)
}

/// Keeps the response the key's request got, to replay it.
pub(crate) async fn store_response(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> QueryResult<()> {
    db::cached(diesel::update(keys::table.find((customer, key))).set(answer(status, body)))
        .execute(conn)
        .await
        .map(drop)
}

/// Keeps `status` and `body` as the key's response unless one is kept
/// already (the request that answered first keeps its answer).
pub(crate) async fn store_first_response(
    mut conn: &AsyncPgConnection,
    customer: Uuid,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> QueryResult<()> {
    db::cached(
        diesel::update(
            keys::table
                .find((customer, key))
                .filter(keys::response_status.is_null()),
        )
        .set(answer(status, body)),
    )
    .execute(&mut conn)
    .await
    .map(drop)
}

/// Keys [`prune`] deletes per statement.
pub(crate) const PRUNE_BATCH: i64 = 5000;

/// Deletes keys older than `hours`; how many.
///
/// In statements of [`PRUNE_BATCH`] keys, until one deletes fewer (or
/// `stop` is set): after a downtime (or a day of heavy checkouts) one
/// `DELETE` of every key due could run into the statement timeout,
/// deleting nothing, at every prune after (as the notification module's
/// prune did).
pub(crate) async fn prune(
    conn: &mut AsyncPgConnection,
    hours: i32,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> QueryResult<usize> {
    // Raw: the age is judged on the database's clock (see `find`), and a
    // `DELETE` takes no `LIMIT`: the batch is the sub-select's (on
    // `idempotency_keys_created_idx`).
    let statement = "DELETE FROM idempotency_keys WHERE (customer_id, key) IN \
                     (SELECT customer_id, key FROM idempotency_keys \
                      WHERE created_at < now() - make_interval(hours => $1) LIMIT $2)";
    let mut pruned = 0;
    loop {
        let deleted = db::sql(statement)
            .bind::<Integer, _>(hours)
            .bind::<BigInt, _>(PRUNE_BATCH)
            .execute(conn)
            .await?;
        pruned += deleted;
        // A stop, or its sender gone (the server stopped), ends it too.
        let stopped = *stop.borrow() || stop.has_changed().is_err();
        if i64::try_from(deleted).unwrap_or(i64::MAX) < PRUNE_BATCH || stopped {
            return Ok(pruned);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A fresh database with the order schema, and a connection to it.
    async fn order_schema() -> (testkit::TestDatabase, db::Object) {
        let db = testkit::TestDatabase::create(&[crate::MODULE_MIGRATIONS]).await;
        let pool = db::build_pool(&db::PoolOptions {
            url: db.url().to_owned(),
            schema: "orders",
            max_size: 1,
            runtimes: 1,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        })
        .unwrap();
        let conn = db::connection(&pool, crate::NAME).await.unwrap();
        (db, conn)
    }

    /// A prune deletes in statements of at most `PRUNE_BATCH` keys (one
    /// statement for every key due may run into the statement timeout,
    /// deleting nothing, at every prune), until all that is due has gone;
    /// younger keys stay. A statement trigger of the test records each
    /// statement's count.
    #[tokio::test]
    async fn a_prune_deletes_in_batches_until_all_due_keys_are_gone() {
        let (_db, mut conn) = order_schema().await;
        for statement in [
            "CREATE TABLE prune_log (deleted bigint NOT NULL)",
            "CREATE FUNCTION log_prune() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN INSERT INTO prune_log SELECT count(*) FROM gone; RETURN NULL; END $$",
            "CREATE TRIGGER log_prune AFTER DELETE ON idempotency_keys \
             REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION log_prune()",
            "INSERT INTO idempotency_keys (customer_id, key, fingerprint, created_at) \
             SELECT gen_random_uuid(), 'k', 'f', \
                    now() - make_interval(hours => CASE WHEN i <= 10001 THEN 48 ELSE 1 END) \
             FROM generate_series(1, 10010) AS i",
        ] {
            db::sql(statement).execute(&mut conn).await.unwrap();
        }
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        assert_eq!(prune(&mut conn, 24, &stop).await.unwrap(), 10001);
        #[derive(diesel::QueryableByName)]
        struct Logged {
            #[diesel(sql_type = BigInt)]
            deleted: i64,
        }
        let logged: Vec<Logged> = db::sql("SELECT deleted FROM prune_log")
            .load(&mut conn)
            .await
            .unwrap();
        let counts: Vec<i64> = logged.iter().map(|l| l.deleted).collect();
        assert_eq!(counts, [PRUNE_BATCH, PRUNE_BATCH, 1], "three statements");
        let left: i64 = keys::table.count().get_result(&mut conn).await.unwrap();
        assert_eq!(left, 9, "the younger keys stay");
    }

    /// A request that found a key expired (or abandoned) frees it only
    /// while it is still that key: a fresh claim another request made
    /// under it since is left alone.
    #[tokio::test]
    async fn forgetting_a_key_leaves_a_fresh_claim_under_it_alone() {
        let (_db, mut conn) = order_schema().await;
        let customer = Uuid::now_v7();
        let stored = async |conn: &mut AsyncPgConnection| -> bool {
            keys::table
                .find((customer, "k"))
                .select(keys::key)
                .first::<String>(conn)
                .await
                .optional()
                .unwrap()
                .is_some()
        };
        let age = async |conn: &mut AsyncPgConnection, sql: &str| {
            diesel::sql_query(sql).execute(conn).await.unwrap();
        };
        diesel::insert_into(keys::table)
            .values((
                keys::customer_id.eq(customer),
                keys::key.eq("k"),
                keys::fingerprint.eq("f"),
                keys::order_id.eq(Some(Uuid::now_v7())),
            ))
            .execute(&mut conn)
            .await
            .unwrap();
        let abandoned = Forget::Abandoned { stale_secs: 60 };
        for which in [Forget::Expired, abandoned] {
            forget(&mut conn, customer, "k", which).await.unwrap();
            assert!(stored(&mut conn).await, "a fresh claim is kept");
        }
        // A fresh claim with no order yet (its request still running) is
        // no abandoned one either.
        age(&mut conn, "UPDATE idempotency_keys SET order_id = NULL").await;
        forget(&mut conn, customer, "k", abandoned).await.unwrap();
        assert!(
            stored(&mut conn).await,
            "a fresh claim without its order is kept"
        );
        age(
            &mut conn,
            "UPDATE idempotency_keys SET order_id = gen_random_uuid()",
        )
        .await;
        // Stale, but its order was made: not abandoned.
        age(
            &mut conn,
            "UPDATE idempotency_keys SET created_at = now() - interval '2 minutes'",
        )
        .await;
        forget(&mut conn, customer, "k", abandoned).await.unwrap();
        assert!(stored(&mut conn).await, "a key with its order is kept");
        age(&mut conn, "UPDATE idempotency_keys SET order_id = NULL").await;
        forget(&mut conn, customer, "k", abandoned).await.unwrap();
        assert!(!stored(&mut conn).await, "an abandoned key is freed");
        diesel::insert_into(keys::table)
            .values((
                keys::customer_id.eq(customer),
                keys::key.eq("k"),
                keys::fingerprint.eq("f"),
            ))
            .execute(&mut conn)
            .await
            .unwrap();
        age(
            &mut conn,
            "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'",
        )
        .await;
        forget(&mut conn, customer, "k", Forget::Expired)
            .await
            .unwrap();
        assert!(!stored(&mut conn).await, "an expired key is freed");
    }
}
