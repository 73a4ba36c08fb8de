//! Integration events on the broker are sealed: the publishing process
//! signs the message's exact bytes with the service key (Ed25519), and
//! every consumer checks the signature before it reads the event. Whoever
//! can reach the broker but lacks the key cannot inject an event (ADR 0018).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::SigningKey;

/// Signs and checks event messages with the service key.
#[derive(Clone)]
pub struct EventSeal {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for EventSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSeal")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl EventSeal {
    /// The seal of `key` (the service key every process of a deployment mounts).
    ///
    /// # Errors
    /// When the key's public half cannot be derived (not expected for a
    /// loaded key).
    pub fn new(key: &SigningKey) -> Result<EventSeal, String> {
        let decoding = key
            .public_decoding_key()
            .ok_or_else(|| "the service key has no usable public half".to_owned())?;
        Ok(EventSeal {
            kid: key.kid().to_owned(),
            encoding: key.encoding().clone(),
            decoding,
        })
    }

    /// The signature of `message`: `<kid>.<base64url Ed25519 signature>`.
    ///
    /// # Errors
    /// Signing failure (not expected with a loaded key).
    pub fn sign(&self, message: &[u8]) -> Result<String, String> {
        jsonwebtoken::crypto::sign(message, &self.encoding, Algorithm::EdDSA)
            .map(|signature| format!("{}.{signature}", self.kid))
            .map_err(|e| e.to_string())
    }

    /// Whether `signature` is this key's signature of exactly `message`.
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        let Some((kid, signature)) = signature.split_once('.') else {
            return false;
        };
        kid == self.kid
            && jsonwebtoken::crypto::verify(signature, message, &self.decoding, Algorithm::EdDSA)
                .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::EventSeal;
    use crate::SigningKey;

    #[test]
    fn a_seal_verifies_its_own_signature_of_the_same_bytes_only() {
        let (key, _) = SigningKey::generate();
        let seal = EventSeal::new(&key).unwrap();
        let message = br#"{"type":"user.registered.v1"}"#;
        let signature = seal.sign(message).unwrap();
        assert!(seal.verify(message, &signature));
        assert!(!seal.verify(br#"{"type":"user.registered.v2"}"#, &signature));
        assert!(!seal.verify(message, "garbage"));
        assert!(!seal.verify(message, ""));

        let (other, _) = SigningKey::generate();
        let forged = EventSeal::new(&other).unwrap().sign(message).unwrap();
        assert!(!seal.verify(message, &forged), "another key's signature");
        // The same signature under this key's id is still another key's.
        let relabelled = format!("{}.{}", key.kid(), forged.split_once('.').unwrap().1);
        assert!(!seal.verify(message, &relabelled));
    }
}
