//! TLS for every outgoing call: rustls with the ring provider, the
//! platform's root certificates plus any the deployment adds
//! (`remote.extra_root_certificates`: a private CA in front of its modules,
//! its provider or its collector).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls_platform_verifier::Verifier;

/// Installs ring as the process's rustls provider. Call it before building
/// any HTTP client (reqwest refuses to build one without a provider; the
/// OpenTelemetry exporter builds one at start). Calling it again is harmless.
pub fn install_crypto_provider() {
    // Err only when a provider is installed already: the first one stays.
    drop(rustls::crypto::ring::default_provider().install_default());
}

/// How many times [`client_config`] loaded the roots (tests).
#[cfg(test)]
static LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The TLS configuration of every outgoing call: ring, TLS 1.2 and 1.3,
/// ALPN `http/1.1`, and certificates verified against the platform's roots
/// (rustls-platform-verifier, what reqwest uses by itself) plus those of the
/// PEM bundles at `paths`. For `reqwest::ClientBuilder::tls_backend_preconfigured`.
///
/// Built once per process and set of extra roots, then cloned (its parts
/// are shared): loading the platform's roots reads and parses every
/// certificate of the system's store, some 5-10 ms, which reqwest would
/// otherwise do again for each client it builds (two at every start, more
/// in the tests). The extra bundles are read on each call, so a changed
/// file is never answered from the cache.
///
/// # Errors
/// A file that cannot be read or holds no valid PEM certificate, named; no
/// root certificate at all.
pub fn client_config(paths: &[impl AsRef<Path>]) -> Result<ClientConfig, String> {
    static BUILT: Mutex<Option<(Vec<Vec<u8>>, ClientConfig)>> = Mutex::new(None);
    let mut bundles = Vec::with_capacity(paths.len());
    for path in paths {
        let path = path.as_ref();
        bundles
            .push(std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?);
    }
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((read, config)) = built.as_ref()
        && *read == bundles
    {
        return Ok(config.clone());
    }
    let mut extra = Vec::new();
    for (path, pem) in paths.iter().zip(&bundles) {
        let path = path.as_ref().display();
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{path}: not a PEM certificate bundle: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{path}: holds no certificate"));
        }
        extra.extend(certs);
    }
    #[cfg(test)]
    LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Verifier::new_with_extra_roots(extra, Arc::clone(&provider))
        .map_err(|e| format!("cannot load the root certificates: {e}"))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    *built = Some((bundles, config.clone()));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_that_is_not_pem_or_holds_nothing_is_named() {
        let dir = std::env::temp_dir().join(format!("tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let error = client_config(&[&empty]).unwrap_err();
        assert!(error.contains("empty.pem: holds no certificate"), "{error}");
        let missing = dir.join("missing.pem");
        let error = client_config(&[&missing]).unwrap_err();
        assert!(
            error.contains("cannot read") && error.contains("missing.pem"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_platform_roots_are_loaded_once_and_shared() {
        let none: [&Path; 0] = [];
        let loads = || LOADS.load(std::sync::atomic::Ordering::Relaxed);
        let config = client_config(&none).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let before = loads();
        for _ in 0..3 {
            client_config(&none).unwrap();
        }
        assert_eq!(loads(), before, "the same roots were loaded again");
    }
}
