//! The inventory's background job: expiring reservations past their time.

use std::time::Duration;

use tokio::sync::watch;

use crate::InventoryModule;

/// The background job that expires reservations.
pub struct ExpiryJob {
    module: InventoryModule,
    every: Duration,
}

impl ExpiryJob {
    /// A job over `module`, run every `expiry_interval_secs` (at least 1 s).
    pub fn new(module: InventoryModule) -> ExpiryJob {
        let every = Duration::from_secs(module.settings().expiry_interval_secs.max(1));
        ExpiryJob { module, every }
    }

    /// Runs until `stop` turns true (or its sender is gone): a pass, then
    /// the interval's sleep. A pass that ran out of time having expired
    /// some (more may be due: a backlog after an outage) is followed by the
    /// next at once; one that expired none (every one it tried failed)
    /// waits, or it would try the same ones again without end. One told to
    /// stop ends the job between two reservations.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let pass = self
                .module
                .expire_pass(|| *stop.borrow() || stop.has_changed().is_err())
                .await;
            let more = match pass {
                Ok(pass) => {
                    if pass.expired > 0 {
                        tracing::info!(expired = pass.expired, "reservations expired");
                    }
                    pass.cut_short && pass.expired > 0
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reservation expiry failed");
                    false
                }
            };
            let mut gone = false;
            if !more {
                tokio::select! {
                    () = tokio::time::sleep(self.every) => {}
                    changed = stop.changed() => gone = changed.is_err(),
                }
            }
            if gone || *stop.borrow() || stop.has_changed().is_err() {
                break;
            }
        }
    }
}
