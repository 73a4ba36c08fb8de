//! Rows the tests read straight from the database: counts and notifications.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::RunQueryDsl;

use super::TestApp;

/// A row of `notification.notifications`.
#[derive(diesel::QueryableByName, Debug, Clone)]
pub struct Note {
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Text)]
    pub channel: String,
    #[diesel(sql_type = Text)]
    pub destination: String,
    #[diesel(sql_type = Text)]
    pub subject: String,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub request_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub attempts: i32,
}

/// Every notification row, in the order they were queued.
pub async fn notifications(app: &TestApp) -> Vec<Note> {
    diesel::sql_query(
        "SELECT event_type, channel, destination, subject, status, request_id, attempts \
         FROM notification.notifications ORDER BY id",
    )
    .load(&mut app.db().await)
    .await
    .unwrap()
}

/// The `n` of a `SELECT count(*) AS n`.
#[derive(diesel::QueryableByName)]
pub struct Count {
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// Runs a `SELECT count(*) AS n` on the app's database.
pub async fn count(app: &TestApp, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(&mut app.db().await)
        .await
        .unwrap()
        .n
}

/// Counts the catalog's outbox events not yet delivered.
pub const UNDELIVERED: &str = "SELECT count(*) AS n FROM catalog.outbox WHERE delivered_at IS NULL";

/// How many of the catalog's outbox events are not yet delivered.
pub async fn undelivered(app: &TestApp) -> i64 {
    count(app, UNDELIVERED).await
}
