//! Saga gauges, read when `/metrics` is scraped: `sagas_in_flight` (sagas
//! not done) and `saga_oldest_in_flight_age_seconds` (how long the oldest of
//! them has been running; a stuck saga shows here).

use diesel::sql_types::{BigInt, Double};
use diesel_async::RunQueryDsl as _;

#[derive(diesel::QueryableByName)]
struct InFlight {
    #[diesel(sql_type = BigInt)]
    running: i64,
    #[diesel(sql_type = Double)]
    oldest: f64,
}

/// Sets the saga gauges from the order module's schema (the scan uses the
/// partial index on sagas not done).
///
/// # Errors
/// The database did not answer (the gauges keep their last values).
pub async fn record_metrics(pool: db::Pool) -> Result<(), String> {
    let mut conn = db::connection(&pool, crate::NAME)
        .await
        .map_err(|e| e.to_string())?;
    let row: InFlight = db::sql(
        "SELECT count(*) AS running, \
                COALESCE(EXTRACT(EPOCH FROM now() - min(started_at)), 0)::float8 AS oldest \
         FROM sagas WHERE NOT done",
    )
    .get_result(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    metrics::gauge!("sagas_in_flight").set(row.running as f64);
    metrics::gauge!("saga_oldest_in_flight_age_seconds").set(row.oldest);
    Ok(())
}
