//! Saga gauges, read when `/metrics` is scraped: `sagas_in_flight` (sagas
//! not done) and `saga_oldest_in_flight_age_seconds` (how long the oldest of
//! them has been running; a stuck saga shows here).

use crate::repo::sagas;

/// Sets the saga gauges from the order module's schema.
///
/// # Errors
/// The database did not answer (the gauges keep their last values).
pub async fn record_metrics(pool: db::Pool) -> Result<(), String> {
    let mut conn = db::connection(&pool, crate::NAME)
        .await
        .map_err(|e| e.to_string())?;
    let (running, oldest) = sagas::in_flight(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    metrics::gauge!("sagas_in_flight").set(running as f64);
    metrics::gauge!("saga_oldest_in_flight_age_seconds").set(oldest);
    Ok(())
}
