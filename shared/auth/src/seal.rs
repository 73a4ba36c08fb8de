//! Integration events on the broker are sealed: the publishing process
//! signs the message's exact bytes with the service key (Ed25519), and
//! every consumer checks the signature before it reads the event. Whoever
//! can reach the broker but lacks the key cannot inject an event (ADR 0018).

use jsonwebtoken::{Algorithm, EncodingKey};

use crate::{KeySet, SigningKey};

/// Signs and checks event messages with the service key.
#[derive(Clone)]
pub struct EventSeal {
    kid: String,
    encoding: EncodingKey,
    /// The keys whose signatures are accepted, by `kid`: the service key's
    /// own, and during a rotation the next or the last one.
    accepted: KeySet,
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
        let accepted = KeySet::from_jwks(crate::JwkSet {
            keys: vec![key.public_jwk().clone()],
        });
        if accepted.get(key.kid()).is_none() {
            return Err("the service key has no usable public half".to_owned());
        }
        Ok(EventSeal {
            kid: key.kid().to_owned(),
            encoding: key.encoding().clone(),
            accepted,
        })
    }

    /// Also accepts the signatures of `keys` (every service key the
    /// deployment accepts, `auth::ServiceTokens::accepted`), still signing
    /// with the service key alone: during a rotation, a process accepts the
    /// events of processes already signing with the next key, or still with
    /// the last one, instead of dead-lettering them (ADR 0013).
    #[must_use]
    pub fn accepting(mut self, keys: &KeySet) -> EventSeal {
        self.accepted = self.accepted.with(keys.jwks().keys.iter().cloned());
        self
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

    /// Whether `signature` is an accepted key's signature of exactly `message`.
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        let Some((kid, signature)) = signature.split_once('.') else {
            return false;
        };
        self.accepted.get(kid).is_some_and(|key| {
            jsonwebtoken::crypto::verify(signature, message, key, Algorithm::EdDSA).unwrap_or(false)
        })
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

    #[test]
    fn a_seal_accepting_another_key_verifies_its_signatures_and_still_signs_with_its_own() {
        let (current, _) = SigningKey::generate();
        let (next, _) = SigningKey::generate();
        let message = br#"{"type":"stock.changed.v1"}"#;
        let by_next = EventSeal::new(&next).unwrap().sign(message).unwrap();
        let plain = EventSeal::new(&current).unwrap();
        assert!(!plain.verify(message, &by_next), "not accepted unless told");

        let accepted = crate::ServiceTokens::new(
            next,
            crate::TokenPolicy {
                issuer: "shop".into(),
                audience: "shop-api".into(),
                access_ttl: std::time::Duration::from_secs(900),
            },
        )
        .accepted()
        .clone();
        let rotating = EventSeal::new(&current).unwrap().accepting(&accepted);
        assert!(
            rotating.verify(message, &by_next),
            "the next key's events are read"
        );
        assert!(!rotating.verify(br#"{"type":"stock.changed.v2"}"#, &by_next));
        let own = rotating.sign(message).unwrap();
        assert!(own.starts_with(&format!("{}.", current.kid())), "{own}");
        assert!(
            plain.verify(message, &own),
            "processes that know only this key read it"
        );
    }
}
