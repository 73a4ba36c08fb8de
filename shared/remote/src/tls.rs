//! TLS for every outgoing call: rustls with the ring provider, the
//! platform's root certificates plus any the deployment adds
//! (`remote.extra_root_certificates`: a private CA in front of its modules,
//! its provider or its collector).

use std::path::Path;

/// Installs ring as the process's rustls provider. Call it before building
/// any HTTP client (reqwest refuses to build one without a provider; the
/// OpenTelemetry exporter builds one at start). Calling it again is harmless.
pub fn install_crypto_provider() {
    // Err only when a provider is installed already: the first one stays.
    drop(rustls::crypto::ring::default_provider().install_default());
}

/// The certificates of the PEM bundles at `paths`, for
/// `reqwest::ClientBuilder::tls_certs_merge`.
///
/// # Errors
/// A file that cannot be read or holds no valid PEM certificate, named.
pub fn extra_roots(paths: &[impl AsRef<Path>]) -> Result<Vec<reqwest::Certificate>, String> {
    let mut roots = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: holds no certificate", path.display()));
        }
        roots.extend(certs);
    }
    Ok(roots)
}
