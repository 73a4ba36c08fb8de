//! TLS for tests: a certificate authority made for the test run and a
//! TLS-terminating proxy in front of a plain local server, so that clients
//! meet `https://localhost:<port>` signed by a CA only the test knows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A CA generated for this test, and a server certificate it signed for
/// `localhost` and `127.0.0.1`.
pub struct TestCa {
    /// The CA certificate, PEM; what a client must trust.
    pub pem: String,
    /// The same, written to a file (for `remote.extra_root_certificates`).
    pub file: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    /// A fresh CA and server certificate.
    ///
    /// # Panics
    /// When key generation fails (a test environment problem).
    pub fn new() -> TestCa {
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "shop test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let chain = vec![leaf.der().clone(), CertificateDer::from(ca.der().to_vec())];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .unwrap();
        let pem = ca.pem();
        let file = std::env::temp_dir().join(format!("shop-test-ca-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&file, &pem).unwrap();
        TestCa {
            pem,
            file,
            server: Arc::new(server),
        }
    }

    /// Serves TLS on a new local port and forwards each connection, in
    /// plain TCP, to `upstream`. Returns the port (`https://localhost:<port>`).
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn proxy_to(&self, upstream: SocketAddr) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = TlsAcceptor::from(Arc::clone(&self.server));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    drop(tokio::io::copy_bidirectional(&mut tls, &mut plain).await);
                });
            }
        });
        port
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        drop(std::fs::remove_file(&self.file));
    }
}
