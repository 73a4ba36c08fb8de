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
        // Pruning has a task of its own: a backlog of keys (after a
        // downtime) takes many batches, and sagas are resumed meanwhile.
        let pruner = tokio::spawn(prune_every(self.module.clone(), stop.clone()));
        loop {
            let saga = self.module.saga();
            let pass = saga.recover_due();
            tokio::pin!(pass);
            let mut stopping = false;
            let outcome = tokio::select! {
                outcome = &mut pass => Some(outcome),
                () = async {
                    // A closed channel is a stop too.
                    let _ = stop.wait_for(|stop| *stop).await;
                } => {
                    // The steps under way get one step's time to end and
                    // be recorded; then the pass is dropped (its runs stop
                    // where they are, as in a crash, which the saga is made
                    // for) and their leases are given up below.
                    stopping = true;
                    let step = Duration::from_millis(self.module.settings.step_timeout_ms);
                    tokio::time::timeout(step, &mut pass).await.ok()
                }
            };
            match outcome {
                Some(Ok(0)) => {}
                Some(Ok(n)) => tracing::debug!(sagas = n, "recovery pass"),
                Some(Err(e)) => tracing::warn!(error = %e, "saga recovery pass failed"),
                None => tracing::warn!("a recovery pass was cut short by the stop"),
            }
            let gone = stopping
                || tokio::select! {
                    _ = tokio::time::sleep(every) => false,
                    changed = stop.changed() => changed.is_err(),
                };
            if gone || *stop.borrow() {
                // The server has stopped: the leases its runs still hold
                // go now, not when their term ends.
                self.module.saga().give_up_leases().await;
                drop(pruner.await);
                return;
            }
        }
    }
}

/// Prunes expired idempotency keys at start and every
/// `prune_interval_secs`, until `stop` turns true.
async fn prune_every(module: OrderModule, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(module.settings.prune_interval_secs.max(1));
    loop {
        match module.prune_idempotency_keys(&stop).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "expired idempotency keys pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning idempotency keys failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}
