//! Building the pieces that several entry points need: the remote
//! dependencies and their policies, signing keys, the token verifier, the
//! HTTP client.

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

/// The dependencies at the edge of the shop, after the modules in
/// [`Dependency::ALL`].
const EDGES: [Dependency; 3] = [
    Dependency::PaymentProvider,
    Dependency::Smtp,
    Dependency::Webhooks,
];

impl Dependency {
    /// Every dependency, in the order error messages list them.
    pub const ALL: [Dependency; ModuleName::ALL.len() + EDGES.len()] = {
        let mut all = [Dependency::Smtp; ModuleName::ALL.len() + EDGES.len()];
        let mut i = 0;
        while i < ModuleName::ALL.len() {
            all[i] = Dependency::Module(ModuleName::ALL[i]);
            i += 1;
        }
        let mut j = 0;
        while j < EDGES.len() {
            all[i + j] = EDGES[j];
            j += 1;
        }
        all
    };

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
    let accepted = public_keys(
        "auth.accepted_service_key_files",
        &auth.accepted_service_key_files,
    )?;
    Ok(auth::ServiceTokens::new(key, auth.policy()).accepting(accepted))
}

/// The public halves of the PEM keys at `paths` (public or private), read
/// for the setting `setting`, which an error names.
fn public_keys(setting: &str, paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<auth::Jwk>> {
    paths
        .iter()
        .map(|path| {
            let pem = std::fs::read(path)
                .with_context(|| format!("{setting}: cannot read {}", path.display()))?;
            auth::public_jwk_from_pem(&pem, &path.display().to_string())
                .with_context(|| setting.to_owned())
        })
        .collect()
}

/// The public keys accepted: the current one and the retired ones.
///
/// # Errors
/// A retired key file that cannot be read or parsed.
pub fn key_set(settings: &Settings, current: &SigningKey) -> anyhow::Result<KeySet> {
    let current = KeySet::from_jwks(auth::JwkSet {
        keys: vec![current.public_jwk().clone()],
    });
    Ok(current.with(public_keys(
        "auth.previous_key_files",
        &settings.auth.previous_key_files,
    )?))
}

/// A client builder with TLS set up (rustls (ring), the platform's roots
/// and `remote.extra_root_certificates`, loaded once per process:
/// [`remote::tls::client_config`]) and the timeouts of
/// `remote.timeout_ms` (connecting: at most 5 s of it), a backstop that
/// never cuts an attempt a policy allows ([`request_cap_ms`]).
///
/// # Errors
/// An extra root certificate file that cannot be read or parsed, named.
pub fn client_builder(settings: &Settings) -> anyhow::Result<reqwest::ClientBuilder> {
    remote::tls::install_crypto_provider();
    let tls = remote::tls::client_config(&settings.remote.extra_root_certificates)
        .map_err(|e| anyhow::anyhow!("remote.extra_root_certificates: {e}"))?;
    let timeout_ms = request_cap_ms(settings);
    Ok(unredirected()
        .tls_backend_preconfigured(tls)
        .timeout(std::time::Duration::from_millis(timeout_ms))
        .connect_timeout(std::time::Duration::from_millis(timeout_ms.min(5000))))
}

/// A client builder that follows no redirect: a module's, the gateway's
/// and a probe's answer is the one that came (a 307 goes back to the client
/// with its `Location`; a followed one turned a forwarded `POST` into a
/// `GET` without its body or `Authorization`, and a probe's redirect to
/// some other page into "up").
fn unredirected() -> reqwest::ClientBuilder {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none())
}

/// The HTTP client's cap on one request: `remote.timeout_ms`, raised to a
/// second above the longest attempt any HTTP dependency's policy allows
/// (`resilience.<dependency>.attempt_timeout_ms`). The policy ends an
/// attempt itself, as a timeout (a gateway's 504); a cap below it would cut
/// the attempt first and make it look like a dependency that cannot be
/// reached.
pub fn request_cap_ms(settings: &Settings) -> u64 {
    let longest_attempt = Dependency::ALL
        .iter()
        .filter(|d| **d != Dependency::Smtp)
        .map(|d| {
            settings
                .resilience
                .for_dependency(d.as_str())
                .attempt_timeout_ms
        })
        .max()
        .unwrap_or(0);
    settings
        .remote
        .timeout_ms
        .max(longest_attempt.saturating_add(1000))
}

/// How long the background tasks (relays, consumers, workers, senders)
/// are given, together, to finish after a stop: the longest call any of
/// them may be in the middle of (the longest `deadline_ms` of a resilience
/// policy: an email's is 15 s by default) and two seconds to record it,
/// but at least 10 s and at most 60 s. A task cut off earlier would have
/// made a call whose outcome it never records (an email sent again after
/// its lease, a saga step taken again by recovery).
pub fn background_stop(settings: &Settings) -> std::time::Duration {
    let longest_call = Dependency::ALL
        .iter()
        .map(|d| settings.resilience.for_dependency(d.as_str()).deadline_ms)
        .max()
        .unwrap_or(0);
    std::time::Duration::from_millis(longest_call.saturating_add(2000).clamp(10_000, 60_000))
}

/// The token verifier: local keys when the user module runs here, the
/// remote user module's JWKS otherwise.
///
/// # Errors
/// Neither is available (configuration validation prevents it).
pub fn verifier(
    settings: &Settings,
    local_keys: Option<KeySet>,
    services: &auth::ServiceTokens,
    client: reqwest::Client,
    policies: &Policies,
) -> anyhow::Result<Verifier> {
    let policy = settings.auth.policy();
    if let Some(keys) = local_keys {
        return Ok(Verifier::local(keys, &policy).with_service_keys(services.accepted()));
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
    Ok(Verifier::remote(jwks, client, user, &policy).with_service_keys(services.accepted()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A redirect is answered as it came, never followed.
    #[tokio::test]
    async fn redirects_are_not_followed() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            // Elsewhere: a port nothing listens on.
            socket
                .write_all(
                    b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:9/\r\n\
                      Content-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await
                .unwrap();
        });
        remote::tls::install_crypto_provider();
        let client = unredirected().build().unwrap();
        let response = client
            .post(format!("http://127.0.0.1:{port}/api/v1/orders"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 307);
        assert_eq!(response.headers()["location"], "http://127.0.0.1:9/");
    }

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
