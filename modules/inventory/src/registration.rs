//! The inventory as the process hosting it sees it: stock and reservations,
//! with the job that expires reservations past their time.

use std::sync::Arc;

use actix_web::web::Data;
use futures_util::future::BoxFuture;
use host::registry::{Apis, Context, Local, Registration};
use host::{ModuleName, Section};

use crate::{ExpiryJob, InventoryModule, Settings};

/// The inventory module, for the composition root.
pub const REGISTRATION: Registration = Registration::new::<Settings>(
    ModuleName::Inventory,
    crate::MODULE_MIGRATIONS,
    crate::http::configure,
    build,
)
.tags(&[("inventory", "Stock per SKU, its history, reservations")]);

/// Shortest reservation lifetime: a checkout's reserve, payment and commit
/// (each retried within the saga's step timeout) must fit in it, or the
/// stock goes back while the order is still being paid for.
const MIN_RESERVATION_TTL_SECS: u64 = 60;
/// Longest reservation lifetime: an abandoned checkout holds its stock
/// this long at most.
const MAX_RESERVATION_TTL_SECS: u64 = 7 * 24 * 60 * 60;

impl Section for Settings {
    fn validate(&self, _environment: &str) -> Result<(), (String, String)> {
        if !(MIN_RESERVATION_TTL_SECS..=MAX_RESERVATION_TTL_SECS)
            .contains(&self.reservation_ttl_secs)
        {
            return Err((
                "reservation_ttl_secs".into(),
                format!(
                    "must be {MIN_RESERVATION_TTL_SECS} to {MAX_RESERVATION_TTL_SECS} seconds \
                     (one minute to seven days), got {}",
                    self.reservation_ttl_secs
                ),
            ));
        }
        // Zero was run as one second; a pass rarer than a reservation's
        // lifetime leaves expired reservations holding stock for longer
        // than they live.
        if !(1..=self.reservation_ttl_secs).contains(&self.expiry_interval_secs) {
            return Err((
                "expiry_interval_secs".into(),
                format!(
                    "must be 1 to inventory.reservation_ttl_secs ({}) seconds, got {}",
                    self.reservation_ttl_secs, self.expiry_interval_secs
                ),
            ));
        }
        // Adjustments refuse a negative threshold: a SKU stocked for the
        // first time must not start with one.
        if self.default_low_stock_threshold < 0 {
            return Err((
                "default_low_stock_threshold".into(),
                format!(
                    "must not be negative, got {}",
                    self.default_low_stock_threshold
                ),
            ));
        }
        Ok(())
    }
}

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let module = InventoryModule::new(cx.pool.clone(), cx.section::<Settings>()?.clone());
        let job = ExpiryJob::new(module.clone());
        let module = Data::new(module);
        let api: Arc<dyn inventory_api::InventoryApi> = module.clone().into_inner();
        Ok(Local::new(module)
            .job(tokio::spawn(job.run(cx.stopped.clone())))
            .apis(Apis {
                inventory: Some(api),
                ..Apis::default()
            }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ttl: u64, interval: u64, threshold: i32) -> Settings {
        Settings {
            database: db::ModuleDatabase {
                url: None,
                max_connections: 10,
            },
            reservation_ttl_secs: ttl,
            expiry_interval_secs: interval,
            default_low_stock_threshold: threshold,
        }
    }

    /// The key `validate` names for these settings, if it refuses them.
    fn refused(ttl: u64, interval: u64, threshold: i32) -> Option<String> {
        settings(ttl, interval, threshold)
            .validate("development")
            .err()
            .map(|(key, _)| key)
    }

    #[test]
    fn the_defaults_and_the_edges_of_each_range_pass() {
        assert_eq!(refused(900, 30, 5), None);
        assert_eq!(refused(60, 1, 0), None);
        assert_eq!(refused(604_800, 604_800, i32::MAX), None);
    }

    #[test]
    fn out_of_range_settings_are_refused_naming_their_key() {
        let ttl = Some("reservation_ttl_secs".to_owned());
        assert_eq!(refused(0, 1, 5), ttl);
        assert_eq!(refused(59, 30, 5), ttl);
        assert_eq!(refused(604_801, 30, 5), ttl);
        assert_eq!(refused(u64::MAX, 30, 5), ttl);
        let interval = Some("expiry_interval_secs".to_owned());
        assert_eq!(refused(900, 0, 5), interval);
        assert_eq!(refused(900, 901, 5), interval);
        let threshold = Some("default_low_stock_threshold".to_owned());
        assert_eq!(refused(900, 30, -1), threshold);
        assert_eq!(refused(900, 30, i32::MIN), threshold);
    }
}
