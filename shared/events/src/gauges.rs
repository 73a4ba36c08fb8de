//! Messaging gauges, read from a module's own tables when `/metrics` is
//! scraped: `outbox_backlog` (events not yet delivered), `outbox_lag_seconds`
//! (age of the oldest of them) and `dead_letters` (open dead letters).

use diesel::sql_types::{BigInt, Double};
use diesel_async::RunQueryDsl as _;

#[derive(diesel::QueryableByName)]
struct Messaging {
    #[diesel(sql_type = BigInt)]
    backlog: i64,
    #[diesel(sql_type = Double)]
    lag: f64,
    #[diesel(sql_type = BigInt)]
    dead: i64,
}

/// Sets `module`'s messaging gauges from its schema (both scans use the
/// partial indexes on undelivered and open rows).
///
/// # Errors
/// The database did not answer (the gauges keep their last values).
pub async fn record_metrics(module: &'static str, pool: &db::Pool) -> Result<(), String> {
    let mut conn = db::connection(pool, module)
        .await
        .map_err(|e| e.to_string())?;
    // Raw: aggregates over two tables and an age on the database's clock in
    // one round trip per scrape.
    let row: Messaging = db::sql(
        "SELECT count(*) AS backlog, \
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS lag, \
                (SELECT count(*) FROM dead_letters WHERE redriven_at IS NULL) AS dead \
         FROM outbox WHERE delivered_at IS NULL",
    )
    .get_result(&mut conn)
    .await
    .map_err(|e| e.to_string())?;
    metrics::gauge!("outbox_backlog", "module" => module).set(row.backlog as f64);
    metrics::gauge!("outbox_lag_seconds", "module" => module).set(row.lag);
    metrics::gauge!("dead_letters", "module" => module).set(row.dead as f64);
    Ok(())
}
