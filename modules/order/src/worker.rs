//! The order module's background job: resuming sagas and pruning
//! idempotency keys, on every instance (the saga lease makes that safe).

use std::time::Duration;

use tokio::sync::watch;

use crate::OrderModule;

/// Resumes sagas whose driver died or that wait for a retry, on every
/// instance (the lease makes that safe).
pub struct RecoveryWorker {
    module: OrderModule,
}

impl RecoveryWorker {
    /// The worker of `module`.
    pub fn new(module: OrderModule) -> RecoveryWorker {
        RecoveryWorker { module }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let every = Duration::from_millis(self.module.settings.recovery_interval_ms);
        let prune_every = Duration::from_secs(self.module.settings.prune_interval_secs.max(1));
        let mut pruned: Option<std::time::Instant> = None;
        loop {
            if pruned.is_none_or(|at| at.elapsed() >= prune_every) {
                pruned = Some(std::time::Instant::now());
                match self.module.prune_idempotency_keys().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(keys = n, "expired idempotency keys pruned"),
                    Err(e) => tracing::warn!(error = %e, "pruning idempotency keys failed"),
                }
            }
            match self.module.saga().recover_due().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(sagas = n, "recovery pass"),
                Err(e) => tracing::warn!(error = %e, "saga recovery pass failed"),
            }
            let gone = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                changed = stop.changed() => changed.is_err(),
            };
            if gone || *stop.borrow() {
                // The server has stopped: the leases its runs still hold
                // go now, not when their term ends.
                self.module.saga().give_up_leases().await;
                return;
            }
        }
    }
}
