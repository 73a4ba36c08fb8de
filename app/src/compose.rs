//! Building the pieces that several entry points need: signing keys, the
//! token verifier, the user module.

use std::sync::Arc;

use anyhow::Context as _;
use auth::{KeySet, SigningKey, Verifier};
use url::Url;

use crate::Settings;
use crate::modules::ModuleName;

/// Something this process calls over the network: a module in another
/// process, or a service at the edge of the shop. Each has one resilience
/// policy (`[resilience.<name>]`), shared by every caller of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dependency {
    /// A module served by another process.
    Module(ModuleName),
    /// The card payment provider (the sandbox until a real one plugs in).
    PaymentProvider,
    /// The SMTP server the notification module sends mail through.
    Smtp,
    /// Webhook receivers the notification module calls.
    Webhooks,
}

impl Dependency {
    /// Every dependency, in the order error messages list them.
    pub const ALL: [Dependency; 9] = [
        Dependency::Module(ModuleName::User),
        Dependency::Module(ModuleName::Catalog),
        Dependency::Module(ModuleName::Inventory),
        Dependency::Module(ModuleName::Notification),
        Dependency::Module(ModuleName::Payment),
        Dependency::Module(ModuleName::Order),
        Dependency::PaymentProvider,
        Dependency::Smtp,
        Dependency::Webhooks,
    ];

    /// The name its policy, metrics and settings use.
    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::Module(module) => module.as_str(),
            Dependency::PaymentProvider => "payment_provider",
            Dependency::Smtp => "smtp",
            Dependency::Webhooks => "webhooks",
        }
    }

    /// The dependency called `name`, if any.
    pub fn parse(name: &str) -> Option<Dependency> {
        Dependency::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

/// One policy per remote dependency, shared by every caller of it.
#[derive(Clone)]
pub struct Policies(Arc<std::collections::HashMap<Dependency, Arc<resilience::Policy>>>);

impl Policies {
    /// The policies `[resilience]` describes.
    pub fn new(settings: &Settings) -> Policies {
        let policies = Dependency::ALL
            .into_iter()
            .map(|dependency| {
                let name = dependency.as_str();
                let settings = settings.resilience.for_dependency(name);
                (
                    dependency,
                    Arc::new(resilience::Policy::new(name, settings)),
                )
            })
            .collect();
        Policies(Arc::new(policies))
    }

    /// The policy of `dependency`.
    pub fn get(&self, dependency: Dependency) -> Arc<resilience::Policy> {
        match self.0.get(&dependency) {
            Some(policy) => Arc::clone(policy),
            // `new` makes one for every variant.
            None => unreachable!("no resilience policy for `{}`", dependency.as_str()),
        }
    }
}

/// File names `shop keys generate` writes: the access-token signing key and
/// the service key (what `auth.signing_key_file` and `auth.service_key_file`
/// point at in a deployment).
pub const KEY_FILES: [&str; 2] = ["jwt-signing-key.pem", "service-key.pem"];

/// The key that signs access tokens, from `auth.signing_key_file`
/// (generated there first when `auth.generate_dev_key` allows).
///
/// # Errors
/// A missing or malformed key file, naming the setting.
pub fn signing_key(settings: &Settings) -> anyhow::Result<SigningKey> {
    let auth = &settings.auth;
    let generate = auth.generate_dev_key && settings.environment != "production";
    SigningKey::load_or_generate(&auth.signing_key_file, generate)
        .with_context(|| "auth.signing_key_file: cannot load the signing key".to_owned())
}

/// The key that signs service tokens, from `auth.service_key_file`
/// (generated there first when `auth.generate_dev_key` allows), and the
/// tokens it signs.
///
/// # Errors
/// A missing or malformed key file, naming the setting.
pub fn service_tokens(settings: &Settings) -> anyhow::Result<auth::ServiceTokens> {
    let auth = &settings.auth;
    let generate = auth.generate_dev_key && settings.environment != "production";
    let key = SigningKey::load_or_generate(&auth.service_key_file, generate)
        .with_context(|| "auth.service_key_file: cannot load the service key".to_owned())?;
    Ok(auth::ServiceTokens::new(key, auth.policy()))
}

/// The public keys accepted: the current one and the retired ones.
///
/// # Errors
/// A retired key file that cannot be read or parsed.
pub fn key_set(settings: &Settings, current: &SigningKey) -> anyhow::Result<KeySet> {
    let mut keys = vec![current.public_jwk().clone()];
    for path in &settings.auth.previous_key_files {
        let pem = std::fs::read(path)
            .with_context(|| format!("auth.previous_key_files: cannot read {}", path.display()))?;
        let jwk = auth::public_jwk_from_pem(&pem, &path.display().to_string())
            .context("auth.previous_key_files")?;
        if !keys.iter().any(|k| k.common.key_id == jwk.common.key_id) {
            keys.push(jwk);
        }
    }
    Ok(KeySet::from_jwks(auth::JwkSet { keys }))
}

/// How a module reaches `module`: the in-process implementation when it is
/// served here (`local`), else the HTTP client `remote` builds for its URL;
/// either one wrapped by `observed` (the `-api` crate's `Observed`: one span
/// and the same RED metrics whichever implementation serves the call).
///
/// # Errors
/// Neither: the module is not served here and has no URL.
pub fn module_api<T: ?Sized>(
    settings: &Settings,
    module: ModuleName,
    local: Option<Arc<T>>,
    remote: impl FnOnce(Url) -> Arc<T>,
    observed: impl FnOnce(Arc<T>) -> Arc<T>,
) -> anyhow::Result<Arc<T>> {
    if let Some(local) = local {
        return Ok(observed(local));
    }
    match settings.modules.remote_url(module) {
        Some(url) => Ok(observed(remote(url.clone()))),
        None => anyhow::bail!(
            "modules.{}.url: the order module calls the {} module: serve it here (modules.enabled) \
             or set its mode = \"remote\" and url",
            module.as_str(),
            module.as_str()
        ),
    }
}

/// The user module over `pool`, signing with `key`.
///
/// # Errors
/// Invalid password-hashing parameters.
#[cfg(feature = "user")]
pub fn user_module(
    settings: &Settings,
    pool: db::Pool,
    key: SigningKey,
) -> anyhow::Result<user::UserModule> {
    let hasher = user::PasswordHasher::new(&settings.user.password_hashing)
        .context("user.password_hashing")?;
    let issuer = Arc::new(auth::Issuer::new(key, settings.auth.policy()));
    let refresh_ttl =
        std::time::Duration::from_secs(settings.user.refresh_token_ttl_days.saturating_mul(86_400));
    Ok(user::UserModule::new(pool, hasher, issuer, refresh_ttl))
}

/// The token verifier: local keys when the user module runs here, the
/// remote user module's JWKS otherwise.
///
/// # Errors
/// Neither is available (configuration validation prevents it).
pub fn verifier(
    settings: &Settings,
    local_keys: Option<KeySet>,
    service_key: &SigningKey,
    client: reqwest::Client,
    policies: &Policies,
) -> anyhow::Result<Verifier> {
    let policy = settings.auth.policy();
    if let Some(keys) = local_keys {
        return Ok(Verifier::local(keys, &policy).with_service_key(service_key));
    }
    let base = settings
        .modules
        .user_url()
        .context("modules.user.url: needed to fetch the keys that verify access tokens")?;
    let jwks = Url::parse(&format!(
        "{}{}",
        base.as_str().trim_end_matches('/'),
        user_api::JWKS_PATH
    ))?;
    let user = policies.get(Dependency::Module(ModuleName::User));
    Ok(Verifier::remote(jwks, client, user, &policy).with_service_key(service_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_is_a_dependency_with_its_own_name() {
        for module in ModuleName::ALL {
            let dependency = Dependency::Module(*module);
            assert!(Dependency::ALL.contains(&dependency), "{module:?}");
            assert_eq!(Dependency::parse(module.as_str()), Some(dependency));
        }
        assert_eq!(Dependency::parse("smtp"), Some(Dependency::Smtp));
        assert_eq!(Dependency::parse("nowhere"), None);
    }
}
