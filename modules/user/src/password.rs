//! Password hashing with Argon2id, off the async workers and bounded.

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::Deserialize;
use tokio::sync::Semaphore;

/// `[user.password_hashing]`: Argon2id cost and how many hashes run at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashingSettings {
    /// Memory per hash, KiB (OWASP: 19456).
    pub memory_kib: u32,
    /// Passes (OWASP: 2).
    pub iterations: u32,
    /// Lanes (OWASP: 1).
    pub parallelism: u32,
    /// Hashes computed at once; more wait (a login burst cannot take every core).
    pub max_concurrent: usize,
    /// Checks and hashes that may wait for a slot; beyond them the answer
    /// is 503 `password_hashing_busy` with `Retry-After` at once.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
}

fn default_max_queued() -> usize {
    16
}

/// Hashes and verifies passwords.
///
/// Every hash runs on tokio's blocking pool, at most `max_concurrent` at a
/// time, so a burst of logins cannot stall the async workers. Verifying for
/// an unknown account runs the same computation against a dummy hash, so
/// "no such account" and "wrong password" cost the same time.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// Admission: running plus waiting; `try_acquire` so nobody queues
    /// beyond it.
    admitted: Arc<Semaphore>,
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

/// Hashing failed (bad parameters or a stored hash that does not parse).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The queue is full: nothing was computed.
    #[error("too many password checks at once")]
    Busy,
    /// The computation itself failed (bad parameters or stored hash).
    #[error("password hashing failed: {0}")]
    Failed(String),
}

impl PasswordHasher {
    /// A hasher with `settings`; computes the dummy hash once.
    ///
    /// # Errors
    /// Parameters Argon2 rejects.
    pub fn new(settings: &HashingSettings) -> Result<PasswordHasher, HashError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| HashError::Failed(e.to_string()))?;
        let dummy_hash = dummy_hash(&params)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        Ok(PasswordHasher {
            argon2,
            permits: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
            admitted: Arc::new(Semaphore::new(
                settings.max_concurrent.max(1) + settings.max_queued,
            )),
            dummy_hash,
        })
    }

    /// The PHC string (`$argon2id$v=19$m=...`) of `password` with a fresh salt.
    ///
    /// # Errors
    /// `HashError::Failed` when hashing fails (bad parameters).
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let argon2 = self.argon2.clone();
        self.run(move || {
            argon2
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| HashError::Failed(e.to_string()))
        })
        .await
    }

    /// Whether `stored` was made with this hasher's algorithm, version and
    /// parameters. One made before they changed (an operator raised
    /// `memory_kib`) costs a check another amount of work than the dummy
    /// hash of an unknown email, which would tell accounts from unknown
    /// emails by time: sign-in hashes such a password again.
    pub fn is_current(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return false;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        let own = self.argon2.params();
        parsed.algorithm == Algorithm::Argon2id.ident()
            && parsed.version == Some(Version::V0x13 as u32)
            && params.m_cost() == own.m_cost()
            && params.t_cost() == own.t_cost()
            && params.p_cost() == own.p_cost()
    }

    /// Whether `password` matches `stored`; with no stored hash (unknown
    /// account) it does the same work and answers `false`.
    ///
    /// # Errors
    /// `HashError` for a stored hash that does not parse.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let argon2 = self.argon2.clone();
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = self
            .run(move || {
                let parsed =
                    PasswordHash::new(&hash).map_err(|e| HashError::Failed(e.to_string()))?;
                Ok(argon2.verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| HashError::Busy)?;
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| HashError::Failed("hasher closed".to_owned()))?;
        // The slots go with the work, not with this future: a request
        // dropped mid-hash (its client reset the connection) frees them
        // only once the hash it started has ended, or every reset would
        // start one more hash beyond the bound.
        tokio::task::spawn_blocking(move || {
            let _slots = (admitted, permit);
            work()
        })
        .await
        .map_err(|e| HashError::Failed(e.to_string()))?
    }
}

/// A stored hash for accounts that do not exist: Argon2id with `params`,
/// so that verifying against it costs what verifying a real password costs,
/// with a zero salt and a zero output that no password is expected to hash
/// to (and [`PasswordHasher::verify`] answers `false` for an unknown account
/// whatever it computes). Written out, not computed: computing one took
/// a whole hash (~30 ms and 19 MiB) of every start.
fn dummy_hash(params: &Params) -> Result<Arc<str>, HashError> {
    // Unpadded base64 of n zero bytes is ceil(4n / 3) "A"s.
    let zeros = |bytes: usize| "A".repeat((bytes * 4).div_ceil(3));
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let phc = format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        zeros(16),
        zeros(output_len),
    );
    PasswordHash::new(&phc).map_err(|e| HashError::Failed(format!("dummy hash: {e}")))?;
    Ok(phc.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(&HashingSettings {
            memory_kib: 19456,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 2,
            max_queued: 16,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_the_owasp_parameters_and_verify() {
        let hasher = hasher();
        let hash = hasher.hash("plum kettle orbit 42".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            hasher
                .verify("plum kettle orbit 42".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("plum kettle orbit 43".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        let again = hasher.hash("plum kettle orbit 42".into()).await.unwrap();
        assert_ne!(hash, again, "a fresh salt each time");
    }

    /// A hash made with other parameters (before an operator changed them)
    /// is not current; this hasher's own, and its dummy, are.
    #[tokio::test]
    async fn only_a_hash_of_the_current_parameters_is_current() {
        let hasher = hasher();
        let own = hasher.hash("plum kettle orbit 42".into()).await.unwrap();
        assert!(hasher.is_current(&own));
        assert!(hasher.is_current(&hasher.dummy_hash));
        let older = PasswordHasher::new(&HashingSettings {
            memory_kib: 8192,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 1,
            max_queued: 1,
        })
        .unwrap();
        let old = older.hash("plum kettle orbit 42".into()).await.unwrap();
        assert!(!hasher.is_current(&old), "{old}");
        assert!(!hasher.is_current("not a hash"));
    }

    /// Checking a password of an unknown account costs what checking a real
    /// one does: the dummy hash has a real hash's algorithm, version,
    /// parameters, salt length and output length.
    #[tokio::test]
    async fn the_dummy_hash_costs_what_a_real_one_costs() {
        let hasher = hasher();
        let real = hasher.hash("plum kettle orbit 42".into()).await.unwrap();
        let (real, dummy) = (
            PasswordHash::new(&real).unwrap(),
            PasswordHash::new(&hasher.dummy_hash).unwrap(),
        );
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert_eq!(
            dummy.salt.map(|s| s.len()),
            real.salt.map(|s| s.len()),
            "salt length"
        );
        assert_eq!(
            dummy.hash.map(|h| h.len()),
            real.hash.map(|h| h.len()),
            "output length"
        );
    }

    /// A request dropped while its hash runs (the client reset the
    /// connection) keeps its slot until that hash ends: the bound holds
    /// against clients that start a hash and go.
    #[tokio::test]
    async fn a_hash_whose_request_is_dropped_keeps_its_slot_until_it_ends() {
        let hasher = Arc::new(
            PasswordHasher::new(&HashingSettings {
                memory_kib: 19456,
                iterations: 2,
                parallelism: 1,
                max_concurrent: 1,
                max_queued: 0,
            })
            .unwrap(),
        );
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
        let request = {
            let hasher = Arc::clone(&hasher);
            tokio::spawn(async move {
                hasher
                    .run(move || {
                        started_tx.send(()).ok();
                        end_rx.recv().ok();
                        Ok(())
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || started_rx.recv())
            .await
            .unwrap()
            .unwrap();
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        assert!(
            matches!(hasher.run(|| Ok(())).await, Err(HashError::Busy)),
            "the dropped request's hash still runs: no slot is free"
        );
        end_tx.send(()).unwrap();
        let freed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match hasher.run(|| Ok(())).await {
                    Err(HashError::Busy) => {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    other => return other,
                }
            }
        })
        .await;
        assert!(
            matches!(freed, Ok(Ok(()))),
            "the slot came back when the hash ended"
        );
    }

    #[tokio::test]
    async fn unknown_accounts_never_verify() {
        let hasher = hasher();
        // Even the dummy's own password does not log into "no account".
        assert!(
            !hasher
                .verify("dummy password for unknown accounts".into(), None)
                .await
                .unwrap()
        );
    }
}
