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

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            match self.module.expire_due().await {
                Ok(n) if n > 0 => tracing::info!(expired = n, "reservations expired"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reservation expiry failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.every) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
        }
    }
}
