//! Ed25519 signing keys, their public JWKs and key sets.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rand::RngCore as _;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file that could not be read.
        path: String,
        /// What reading it failed with.
        source: std::io::Error,
    },
    /// The file is not an Ed25519 key in PEM.
    #[error("{0}: not an Ed25519 key in PEM (PKCS#8 private key or SPKI public key)")]
    Format(String),
}

/// The private key access tokens are signed with.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// DER prefix of a PKCS#8 v1 Ed25519 private key; the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl SigningKey {
    /// A key from a PKCS#8 PEM (`openssl genpkey -algorithm ed25519`).
    ///
    /// # Errors
    /// [`KeyError::Format`] when the PEM is not an Ed25519 private key.
    pub fn from_pem(pem: &[u8], origin: &str) -> Result<SigningKey, KeyError> {
        let encoding =
            EncodingKey::from_ed_pem(pem).map_err(|_| KeyError::Format(origin.to_owned()))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::EdDSA)
            .map_err(|_| KeyError::Format(origin.to_owned()))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| KeyError::Format(origin.to_owned()))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(SigningKey { kid, encoding, jwk })
    }

    /// A new random key, and its PKCS#8 PEM.
    pub fn generate() -> (SigningKey, String) {
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        der.extend_from_slice(&seed);
        let pem = pem_encode("PRIVATE KEY", &der);
        // A well-formed PKCS#8 Ed25519 key always loads.
        let key = SigningKey::from_pem(pem.as_bytes(), "generated key")
            .unwrap_or_else(|_| unreachable!("generated PKCS#8 is valid"));
        (key, pem)
    }

    /// Loads the key at `path`; if the file does not exist and `generate`
    /// is set, makes a new one and writes it there (mode 0600).
    ///
    /// # Errors
    /// Unreadable or malformed file; a missing file when `generate` is off.
    pub fn load_or_generate(path: &Path, generate: bool) -> Result<SigningKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(pem) => SigningKey::from_pem(&pem, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && generate => {
                let (key, pem) = SigningKey::generate();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                // Written aside, then linked into place: a process starting
                // at the same moment either wins or reads the winner's key,
                // never a half-written file.
                let aside = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
                write_private(&aside, pem.as_bytes()).map_err(io)?;
                let linked = std::fs::hard_link(&aside, path);
                drop(std::fs::remove_file(&aside));
                match linked {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), kid = %key.kid, "generated a development key");
                        Ok(key)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let pem = std::fs::read(path).map_err(io)?;
                        SigningKey::from_pem(&pem, &path.display().to_string())
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The key id (`kid` header of the tokens it signs).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK.
    pub fn public_jwk(&self) -> &Jwk {
        &self.jwk
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// The public JWK of an Ed25519 key given as a PEM: a public key (SPKI,
/// the usual form for a retired key) or a private key.
///
/// # Errors
/// [`KeyError::Format`] for anything else.
pub fn public_jwk_from_pem(pem: &[u8], origin: &str) -> Result<Jwk, KeyError> {
    if let Ok(signing) = SigningKey::from_pem(pem, origin) {
        return Ok(signing.jwk);
    }
    let decoding =
        DecodingKey::from_ed_pem(pem).map_err(|_| KeyError::Format(origin.to_owned()))?;
    let raw = decoding
        .try_get_as_bytes()
        .map_err(|_| KeyError::Format(origin.to_owned()))?;
    if raw.len() != 32 {
        return Err(KeyError::Format(origin.to_owned()));
    }
    let mut jwk = Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(raw),
        }),
    };
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| KeyError::Format(origin.to_owned()))?;
    jwk.common.key_id = Some(kid);
    Ok(jwk)
}

/// Public keys by id: what a verifier trusts, and what a JWKS publishes.
/// Shared, not copied, when cloned: each token check takes the set at
/// hand (a JWKS may hold many keys).
#[derive(Clone, Default)]
pub struct KeySet(std::sync::Arc<Keys>);

#[derive(Default)]
struct Keys {
    jwks: JwkSet,
    keys: HashMap<String, DecodingKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys.keys()).finish()
    }
}

impl KeySet {
    /// The usable keys of a JWKS: Ed25519 keys with a `kid`; others are skipped.
    pub fn from_jwks(jwks: JwkSet) -> KeySet {
        let mut keys = HashMap::new();
        let mut usable = Vec::new();
        for jwk in jwks.keys {
            let is_ed25519 = matches!(
                &jwk.algorithm,
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519
            );
            let (Some(kid), true) = (jwk.common.key_id.clone(), is_ed25519) else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_jwk(&jwk) {
                keys.insert(kid, key);
                usable.push(jwk);
            }
        }
        KeySet(std::sync::Arc::new(Keys {
            jwks: JwkSet { keys: usable },
            keys,
        }))
    }

    /// This set and `others`, each key once (by `kid`; this set's first).
    #[must_use]
    pub fn with(&self, others: impl IntoIterator<Item = Jwk>) -> KeySet {
        let mut keys = self.0.jwks.keys.clone();
        for jwk in others {
            if !keys.iter().any(|k| k.common.key_id == jwk.common.key_id) {
                keys.push(jwk);
            }
        }
        KeySet::from_jwks(JwkSet { keys })
    }

    /// The key with id `kid`.
    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.0.keys.get(kid)
    }

    /// The set as a JWKS document.
    pub fn jwks(&self) -> &JwkSet {
        &self.0.jwks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_generating_the_same_key_at_once_all_get_the_winners_key() {
        let dir = std::env::temp_dir().join(format!("shop-key-race-{}", uuid::Uuid::new_v4()));
        let path = dir.join("key.pem");
        let kids: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        SigningKey::load_or_generate(&path, true)
                            .unwrap()
                            .kid()
                            .to_owned()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
        let on_disk = SigningKey::load_or_generate(&path, false).unwrap();
        assert_eq!(on_disk.kid(), kids[0]);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no leftovers");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn generated_keys_roundtrip_through_pem_with_a_stable_kid() {
        let (key, pem) = SigningKey::generate();
        let again = SigningKey::from_pem(pem.as_bytes(), "test").unwrap();
        assert_eq!(key.kid(), again.kid());
        assert_eq!(
            public_jwk_from_pem(pem.as_bytes(), "test")
                .unwrap()
                .common
                .key_id
                .as_deref(),
            Some(key.kid())
        );
        let (other, _) = SigningKey::generate();
        assert_ne!(key.kid(), other.kid());
    }

    #[test]
    fn a_public_pem_gives_the_same_jwk_as_its_private_key() {
        // `openssl pkey -pubout` of the RFC 8032 test key 1.
        let private = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
        let public = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n";
        let from_private = public_jwk_from_pem(private.as_bytes(), "private").unwrap();
        let from_public = public_jwk_from_pem(public.as_bytes(), "public").unwrap();
        assert_eq!(from_private.common.key_id, from_public.common.key_id);
        assert_eq!(from_private.algorithm, from_public.algorithm);
    }

    #[test]
    fn garbage_is_a_format_error() {
        assert!(matches!(
            SigningKey::from_pem(b"not a key", "x"),
            Err(KeyError::Format(_))
        ));
    }
}
