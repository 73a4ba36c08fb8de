//! The user module's background job: pruning refresh tokens long expired.

use std::time::Duration;

use crate::UserModule;

/// Prunes expired refresh tokens every `user.prune_interval_secs`, first at
/// start.
pub struct RetentionJob {
    users: UserModule,
    every: Duration,
}

impl RetentionJob {
    /// A job pruning the refresh tokens of `users`, every `every` (at least
    /// a second).
    pub fn new(users: UserModule, every: Duration) -> RetentionJob {
        RetentionJob { users, every }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            match self.users.prune_refresh_tokens().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(tokens = n, "expired refresh tokens pruned"),
                Err(e) => tracing::warn!(error = %e, "pruning refresh tokens failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.every.max(Duration::from_secs(1))) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}
