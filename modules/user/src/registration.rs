//! The user module as the process hosting it sees it: accounts and
//! sign-in; it holds the keys that sign and verify access tokens, and prunes
//! expired refresh tokens in the background.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::{self as aweb, Data};
use anyhow::Context as _;
use futures_util::future::BoxFuture;
use host::compose;
use host::registry::{Context, Local, Registration};
use host::{ModuleName, Section};

use crate::{PasswordHasher, RetentionJob, Settings, UserModule};

/// The user module, for the composition root.
pub const REGISTRATION: Registration = Registration::new::<Settings>(
    ModuleName::User,
    crate::MODULE_MIGRATIONS,
    crate::http::configure,
    build,
)
.tags(&[
    (
        "auth",
        "Sign-in, token refresh and sign-out; the public keys of access tokens",
    ),
    ("users", "Accounts, profiles and roles"),
]);

impl Section for Settings {
    fn validate(&self, _environment: &str) -> Result<(), (String, String)> {
        // Zero: every refresh token born expired (each session ends with
        // its access token); past ten years, a date chrono cannot hold.
        if !(1..=3650).contains(&self.refresh_token_ttl_days) {
            return Err((
                "refresh_token_ttl_days".into(),
                format!(
                    "must be 1 to 3650 days, got {}",
                    self.refresh_token_ttl_days
                ),
            ));
        }
        if !(1..=3650).contains(&self.session_max_days) {
            return Err((
                "session_max_days".into(),
                format!("must be 1 to 3650 days, got {}", self.session_max_days),
            ));
        }
        if self.prune_interval_secs == 0 {
            return Err((
                "prune_interval_secs".into(),
                "must be at least 1 second".into(),
            ));
        }
        Ok(())
    }
}

/// The user module over `pool`, signing access tokens with `key` (the
/// process's `auth` settings give their lifetimes, issuer and audience).
///
/// # Errors
/// The module is not compiled in, or invalid password-hashing parameters.
pub fn module(
    settings: &host::Settings,
    pool: db::Pool,
    key: auth::SigningKey,
) -> anyhow::Result<UserModule> {
    let own = settings.section::<Settings>()?;
    let hasher = PasswordHasher::new(&own.password_hashing).context("user.password_hashing")?;
    let issuer = Arc::new(auth::Issuer::new(key, settings.auth.policy()));
    let refresh_ttl = Duration::from_secs(own.refresh_token_ttl_days.saturating_mul(86_400));
    let session_max = Duration::from_secs(own.session_max_days.saturating_mul(86_400));
    Ok(UserModule::new(pool, hasher, issuer, refresh_ttl).with_session_max(session_max))
}

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let settings = cx.settings;
        let key = compose::signing_key(settings)?;
        let keys = compose::key_set(settings, &key)?;
        let users = module(settings, cx.pool.clone(), key)?;
        let retention = RetentionJob::new(
            users.clone(),
            Duration::from_secs(cx.section::<Settings>()?.prune_interval_secs),
        );
        let limits = &settings.rate_limit;
        let limits = Data::new(crate::http::Limits::new(
            limits.trusted_proxies.clone(),
            limits.per_minute(limits.login_per_minute_per_ip),
            limits.per_minute(limits.login_per_minute_per_account),
            limits.per_minute(limits.registrations_per_minute_per_ip),
        ));
        let users = Data::new(users);
        Ok(
            Local::with_data(Arc::new(move |cfg: &mut aweb::ServiceConfig| {
                cfg.app_data(users.clone()).app_data(limits.clone());
            }))
            .job(tokio::spawn(retention.run(cx.stopped.clone())))
            .keys(keys),
        )
    })
}
