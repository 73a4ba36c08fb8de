//! The order module as the process hosting it sees it: carts, orders and
//! the checkout saga, which calls the catalog, inventory and payment modules
//! in process when they are served here and over HTTP otherwise; its
//! recovery worker resumes sagas.

use std::sync::Arc;

use actix_web::web::Data;
use futures_util::future::BoxFuture;
use host::registry::{Context, Local, Registration};
use host::{ModuleName, Section};

use crate::{Dependencies, OrderModule, RecoveryWorker, Settings};

/// The order module, for the composition root.
pub const REGISTRATION: Registration = Registration::new::<Settings>(
    ModuleName::Order,
    crate::MODULE_MIGRATIONS,
    crate::http::configure,
    build,
)
.tags(&[(
    "orders",
    "Cart, checkout (with Idempotency-Key), orders and their timeline",
)])
.gauges(|pool| Box::pin(crate::record_metrics(pool)));

impl Section for Settings {
    fn validate(&self, environment: &str) -> Result<(), (String, String)> {
        if environment == "production" && self.crash_at.is_some() {
            return Err((
                "crash_at".into(),
                "is a failpoint for tests and must be unset in production".into(),
            ));
        }
        if self.max_step_attempts < 1 {
            return Err(("max_step_attempts".into(), "must be at least 1".into()));
        }
        if self.lease_secs == 0 || self.recovery_interval_ms == 0 {
            return Err((
                "lease_secs".into(),
                "and order.recovery_interval_ms must be at least 1".into(),
            ));
        }
        // On the way forward the lease is renewed only once a third of it
        // has passed (results are held until then), so a step may begin
        // with two thirds of it left: a longer step outlives the lease, and
        // another run takes the saga over while the call still runs.
        let lease_ms = self.lease_secs.saturating_mul(1000);
        if self.step_timeout_ms.saturating_mul(3) >= lease_ms.saturating_mul(2) {
            return Err((
                "step_timeout_ms".into(),
                format!(
                    "must be under two thirds of order.lease_secs ({} ms) (on the way \
                     forward the lease is renewed every third of it), got {}",
                    lease_ms, self.step_timeout_ms
                ),
            ));
        }
        // A key with no answer yet is taken for one whose request died
        // once older than this. A live request holds it from its order's
        // transaction (the pricing and the card's token come before it)
        // through the wait, then answers: a threshold within the wait
        // would answer a retry from the order while the first request
        // still runs, and keep whichever answer came last.
        let stale_ms = self.idempotency_stale_secs.saturating_mul(1000);
        if stale_ms <= self.checkout_wait_ms {
            return Err((
                "idempotency_stale_secs".into(),
                format!(
                    "must be longer than order.checkout_wait_ms ({} ms), got {} s",
                    self.checkout_wait_ms, self.idempotency_stale_secs
                ),
            ));
        }
        // `POST /orders` promises the first answer is replayed for 24 hours
        // (a key older than that is new again, `keys::KeyRow::expired`):
        // pruned sooner, a retry within the day would be a new request.
        if self.idempotency_retention_hours < KEY_LIFETIME_HOURS {
            return Err((
                "idempotency_retention_hours".into(),
                format!(
                    "must be at least {KEY_LIFETIME_HOURS} (keys answer for that long), got {}",
                    self.idempotency_retention_hours
                ),
            ));
        }
        Ok(())
    }
}

/// How long a key's first answer is replayed: `POST /orders`'s promise,
/// and the age at which `keys` judge a key expired.
const KEY_LIFETIME_HOURS: u32 = 24;

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let deps = Dependencies {
            catalog: cx.module_api(
                ModuleName::Catalog,
                cx.apis.catalog.clone(),
                |client, base, policy| {
                    Arc::new(catalog_api::client::CatalogClient::new(
                        client, base, policy,
                    ))
                },
                |api| Arc::new(catalog_api::observed::Observed(api)),
            )?,
            inventory: cx.module_api(
                ModuleName::Inventory,
                cx.apis.inventory.clone(),
                |client, base, policy| {
                    Arc::new(inventory_api::client::InventoryClient::new(
                        client, base, policy,
                    ))
                },
                |api| Arc::new(inventory_api::observed::Observed(api)),
            )?,
            payment: cx.module_api(
                ModuleName::Payment,
                cx.apis.payment.clone(),
                |client, base, policy| {
                    Arc::new(payment_api::client::PaymentClient::new(
                        client, base, policy,
                    ))
                },
                |api| Arc::new(payment_api::observed::Observed(api)),
            )?,
            services: Arc::clone(cx.services),
        };
        let settings = cx.section::<Settings>()?.clone();
        let module = OrderModule::new(cx.pool, deps, settings);
        let worker = RecoveryWorker::new(module.clone());
        Ok(Local::new(Data::new(module)).job(tokio::spawn(worker.run(cx.stopped.clone()))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timings of `config/default.toml`.
    fn defaults() -> Settings {
        Settings {
            database: db::ModuleDatabase {
                url: None,
                max_connections: 10,
            },
            checkout_wait_ms: 5000,
            lease_secs: 30,
            recovery_interval_ms: 1000,
            step_timeout_ms: 15_000,
            max_step_attempts: 5,
            retry_base_ms: 200,
            retry_max_ms: 10_000,
            idempotency_stale_secs: 60,
            idempotency_retention_hours: 24,
            prune_interval_secs: 3600,
            crash_at: None,
        }
    }

    /// The key `validate` names for `settings`, if it refuses them.
    fn refused(settings: &Settings) -> Option<String> {
        settings.validate("development").err().map(|(key, _)| key)
    }

    #[test]
    fn the_defaults_and_the_edges_of_the_timings_pass() {
        assert_eq!(refused(&defaults()), None);
        // Just under two thirds of the lease (20 s of 30).
        let step = Settings {
            step_timeout_ms: 19_999,
            ..defaults()
        };
        assert_eq!(refused(&step), None);
        // A one-second lease with a step that fits in it.
        let short = Settings {
            lease_secs: 1,
            step_timeout_ms: 666,
            ..defaults()
        };
        assert_eq!(refused(&short), None);
        let stale = Settings {
            checkout_wait_ms: 59_999,
            ..defaults()
        };
        assert_eq!(refused(&stale), None);
        let kept = Settings {
            idempotency_retention_hours: 24 * 7,
            ..defaults()
        };
        assert_eq!(refused(&kept), None);
    }

    /// A step may begin with two thirds of its lease left (renewed every
    /// third on the way forward); a key is stale only after the checkout's
    /// wait; keys are kept as long as `POST /orders` says they answer.
    #[test]
    fn timings_that_contradict_each_other_are_refused_naming_their_key() {
        let step = Some("step_timeout_ms".to_owned());
        for (lease_secs, step_timeout_ms) in [(30, 20_000), (30, 30_000), (1, 667), (1, 15_000)] {
            let settings = Settings {
                lease_secs,
                step_timeout_ms,
                ..defaults()
            };
            assert_eq!(
                refused(&settings),
                step,
                "{lease_secs} s, {step_timeout_ms} ms"
            );
        }
        let huge = Settings {
            lease_secs: u64::MAX,
            step_timeout_ms: u64::MAX,
            ..defaults()
        };
        assert_eq!(refused(&huge), step, "no overflow lets it through");
        let stale = Some("idempotency_stale_secs".to_owned());
        for (idempotency_stale_secs, checkout_wait_ms) in [(60, 60_000), (1, 5000), (0, 0)] {
            let settings = Settings {
                idempotency_stale_secs,
                checkout_wait_ms,
                ..defaults()
            };
            assert_eq!(
                refused(&settings),
                stale,
                "{idempotency_stale_secs} s, {checkout_wait_ms} ms"
            );
        }
        let retention = Some("idempotency_retention_hours".to_owned());
        for idempotency_retention_hours in [0, 1, 23] {
            let settings = Settings {
                idempotency_retention_hours,
                ..defaults()
            };
            assert_eq!(refused(&settings), retention);
        }
    }
}
