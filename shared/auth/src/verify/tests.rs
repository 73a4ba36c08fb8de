//! Tests of [`Verifier`](super::Verifier): valid tokens, service tokens, and bad
//! tokens rejected for the right reason (including `alg: none` and HMAC confusion).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kernel::Role;
use uuid::Uuid;

use super::*;
use crate::{Issuer, SigningKey};

fn policy() -> TokenPolicy {
    TokenPolicy {
        issuer: "shop".into(),
        audience: "shop-api".into(),
        access_ttl: Duration::from_secs(900),
    }
}

#[tokio::test]
async fn during_a_rotation_the_service_tokens_of_an_accepted_key_pass_for_the_service_role_only() {
    let (user_key, _) = SigningKey::generate();
    let (current, _) = SigningKey::generate();
    let (next, next_pem) = SigningKey::generate();
    let users = KeySet::from_jwks(jsonwebtoken::jwk::JwkSet {
        keys: vec![user_key.public_jwk().clone()],
    });
    // This process signs with the current key and accepts the next one.
    let here = crate::ServiceTokens::new(current, policy()).accepting([next.public_jwk().clone()]);
    let verifier = Verifier::local(users.clone(), &policy()).with_service_keys(here.accepted());
    let rotated = crate::ServiceTokens::new(next, policy());

    let caller = verifier.verify(&rotated.token().unwrap()).await.unwrap();
    assert_eq!(caller.roles, vec![Role::Service]);
    assert!(verifier.verify(&here.token().unwrap()).await.is_ok());
    // The accepted key signs the service role only.
    let admin = Issuer::new(
        SigningKey::from_pem(next_pem.as_bytes(), "next").unwrap(),
        policy(),
    )
    .issue(Uuid::now_v7(), &[Role::Admin])
    .unwrap();
    assert_eq!(
        verifier.verify(&admin.token).await,
        Err(AuthError::InvalidSignature)
    );
    // A process told of no other key still refuses the next one's tokens.
    let before = Verifier::local(users, &policy()).with_service_key(here.key());
    assert_eq!(
        before.verify(&rotated.token().unwrap()).await,
        Err(AuthError::UnknownKey)
    );
}

#[tokio::test]
async fn service_tokens_carry_the_service_role_and_only_the_service_key_signs_it() {
    let (user_key, _) = SigningKey::generate();
    let (service_key, service_pem) = SigningKey::generate();
    let jwks = jsonwebtoken::jwk::JwkSet {
        keys: vec![user_key.public_jwk().clone()],
    };
    let verifier =
        Verifier::local(KeySet::from_jwks(jwks), &policy()).with_service_key(&service_key);
    let users = Issuer::new(user_key, policy());
    let services = crate::ServiceTokens::new(service_key, policy());

    let caller = verifier.verify(&services.token().unwrap()).await.unwrap();
    assert_eq!(caller.roles, vec![Role::Service]);
    // Cached: the same token until shortly before it expires.
    assert_eq!(services.token().unwrap(), services.token().unwrap());

    // A user key cannot mint the service role...
    let forged = users.issue(Uuid::now_v7(), &[Role::Service]).unwrap();
    assert_eq!(
        verifier.verify(&forged.token).await,
        Err(AuthError::InvalidSignature)
    );
    // ...nor can the service key mint a user's roles.
    let same_service_key = SigningKey::from_pem(service_pem.as_bytes(), "service").unwrap();
    let admin_by_service_key = Issuer::new(same_service_key, policy())
        .issue(Uuid::now_v7(), &[Role::Admin])
        .unwrap();
    assert_eq!(
        verifier.verify(&admin_by_service_key.token).await,
        Err(AuthError::InvalidSignature)
    );
    // Another service key is unknown; so is the service key to a
    // verifier not configured with it.
    let (other_key, _) = SigningKey::generate();
    let other = crate::ServiceTokens::new(other_key, policy());
    assert_eq!(
        verifier.verify(&other.token().unwrap()).await,
        Err(AuthError::UnknownKey)
    );
    let (_, plain) = setup();
    assert_eq!(
        plain.verify(&services.token().unwrap()).await,
        Err(AuthError::UnknownKey)
    );
}

fn setup() -> (Issuer, Verifier) {
    let (key, _) = SigningKey::generate();
    let jwks = jsonwebtoken::jwk::JwkSet {
        keys: vec![key.public_jwk().clone()],
    };
    let verifier = Verifier::local(KeySet::from_jwks(jwks), &policy());
    (Issuer::new(key, policy()), verifier)
}

fn claims(issuer: &Issuer) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        sub: Uuid::now_v7(),
        roles: vec![Role::Customer],
        iss: issuer.policy().issuer.clone(),
        aud: issuer.policy().audience.clone(),
        exp: now + 60,
        iat: now,
        jti: "j".into(),
    }
}

#[tokio::test]
async fn a_valid_token_names_its_caller() {
    let (issuer, verifier) = setup();
    let user = Uuid::now_v7();
    let token = issuer.issue(user, &[Role::Admin]).unwrap();
    let caller = verifier.verify(&token.token).await.unwrap();
    assert_eq!(caller.user_id, user);
    assert_eq!(caller.roles, vec![Role::Admin]);
    assert_eq!(token.expires_in, 900);
}

#[tokio::test]
async fn bad_tokens_are_rejected_for_the_right_reason() {
    let (issuer, verifier) = setup();
    let mut expired = claims(&issuer);
    expired.exp -= 3600;
    let mut wrong_iss = claims(&issuer);
    wrong_iss.iss = "evil".into();
    let mut wrong_aud = claims(&issuer);
    wrong_aud.aud = "other-api".into();
    let (stranger, _) = SigningKey::generate();
    let stranger = Issuer::new(stranger, policy());

    let cases = [
        (issuer.sign(&expired).unwrap(), AuthError::Expired),
        (issuer.sign(&wrong_iss).unwrap(), AuthError::WrongIssuer),
        (issuer.sign(&wrong_aud).unwrap(), AuthError::WrongAudience),
        (
            stranger.sign(&claims(&stranger)).unwrap(),
            AuthError::UnknownKey,
        ),
        ("not.a.token".to_owned(), AuthError::Malformed),
    ];
    for (token, expected) in cases {
        assert_eq!(verifier.verify(&token).await, Err(expected));
    }
}

#[tokio::test]
async fn alg_none_and_hmac_confusion_are_rejected() {
    let (issuer, verifier) = setup();
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&issuer)).unwrap());
    let kid = issuer.key().kid();
    let none_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{kid}"}}"#));
    let none = format!("{none_header}.{body}.");
    assert_eq!(
        verifier.verify(&none).await,
        Err(AuthError::UnsupportedAlgorithm)
    );

    // HS256 "signed" with the public key as the secret.
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    let jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(okp) =
        &issuer.key().public_jwk().algorithm
    else {
        panic!("Ed25519 key");
    };
    let hs = jsonwebtoken::encode(
        &header,
        &claims(&issuer),
        &jsonwebtoken::EncodingKey::from_secret(okp.x.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(&hs).await,
        Err(AuthError::UnsupportedAlgorithm)
    );

    // A valid signature over a tampered payload fails.
    let good = issuer
        .issue(Uuid::now_v7(), &[Role::Customer])
        .unwrap()
        .token;
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut forged = claims(&issuer);
    forged.roles = vec![Role::Admin];
    let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    parts[1] = &forged_body;
    assert_eq!(
        verifier.verify(&parts.join(".")).await,
        Err(AuthError::InvalidSignature)
    );
}

/// What the test's JWKS endpoint does with a fetch.
const SERVE: u8 = 0;
const HANG: u8 = 1;
const FAIL: u8 = 2;

/// A JWKS endpoint serving `jwks`, hanging or failing as `mode` says, and
/// counting the fetches.
async fn jwks_endpoint(
    jwks: String,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Url {
    use std::sync::atomic::Ordering::SeqCst;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (jwks, mode, fetches) = (jwks.clone(), mode.clone(), fetches.clone());
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut request = [0u8; 4096];
                drop(socket.read(&mut request).await);
                fetches.fetch_add(1, SeqCst);
                let answer = match mode.load(SeqCst) {
                    SERVE => format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                        jwks.len()
                    ),
                    HANG => {
                        tokio::time::sleep(Duration::from_secs(120)).await;
                        return;
                    }
                    _ => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\
                          connection: close\r\n\r\n"
                        .to_owned(),
                };
                drop(socket.write_all(answer.as_bytes()).await);
            });
        }
    });
    Url::parse(&format!("http://127.0.0.1:{port}/.well-known/jwks.json")).unwrap()
}

/// A verifier fetching from `url`, one attempt of up to a minute per fetch.
fn remote_verifier(url: Url) -> Verifier {
    let settings = resilience::PolicySettings {
        attempt_timeout_ms: 60_000,
        deadline_ms: 60_000,
        max_retries: 0,
        retry_base_ms: 10,
        retry_max_ms: 10,
        retry_budget_percent: 20.0,
        retry_budget_min_per_sec: 1.0,
        max_concurrent: 10,
        breaker: resilience::BreakerSettings {
            window_size: 100,
            minimum_calls: 100,
            failure_rate_threshold: 100.0,
            slow_call_rate_threshold: 100.0,
            slow_call_ms: 60_000,
            wait_open_ms: 1000,
            half_open_calls: 1,
        },
    };
    let policy = std::sync::Arc::new(resilience::Policy::new("keys", settings));
    drop(rustls::crypto::ring::default_provider().install_default());
    Verifier::remote(url, reqwest::Client::new(), policy, &self::policy())
}

/// Makes the verifier's keys stale, as if fetched and last tried `ago`.
async fn age_keys(verifier: &Verifier, ago: Duration) {
    let Source::Remote(remote) = &verifier.source else {
        panic!("a remote verifier");
    };
    let mut cached = remote.cache.write().await;
    let cached = cached.as_mut().expect("keys fetched");
    let then = Instant::now().checked_sub(ago).unwrap();
    cached.fetched = Some(then);
    cached.tried = then;
}

/// While the user module hangs on a fetch of stale keys, tokens whose key
/// is known are verified with the keys at hand: one task waits on the
/// fetch, not every request of the process.
#[tokio::test]
async fn known_keys_serve_while_a_fetch_hangs() {
    use std::sync::atomic::Ordering::SeqCst;
    let (key, _) = SigningKey::generate();
    let jwks = serde_json::to_string(&jsonwebtoken::jwk::JwkSet {
        keys: vec![key.public_jwk().clone()],
    })
    .unwrap();
    let issuer = Issuer::new(key, policy());
    let (mode, fetches) = (std::sync::Arc::default(), std::sync::Arc::default());
    let url = jwks_endpoint(
        jwks,
        std::sync::Arc::clone(&mode),
        std::sync::Arc::clone(&fetches),
    )
    .await;
    let verifier = std::sync::Arc::new(remote_verifier(url));
    let token = issuer
        .issue(Uuid::now_v7(), &[Role::Customer])
        .unwrap()
        .token;
    verifier.verify(&token).await.unwrap();
    assert_eq!(fetches.load(SeqCst), 1);

    age_keys(&verifier, JWKS_TTL + Duration::from_secs(1)).await;
    mode.store(HANG, SeqCst);
    // Every request at once, the first one included: none waits on the
    // fetch of the stale keys, which hangs in the background.
    let mut verifying = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (verifier, token) = (std::sync::Arc::clone(&verifier), token.clone());
        verifying.spawn(async move { verifier.verify(&token).await });
    }
    let verified = tokio::time::timeout(Duration::from_secs(30), verifying.join_all())
        .await
        .expect("a request waited on the hung fetch");
    assert!(verified.iter().all(Result::is_ok), "{verified:?}");
    while fetches.load(SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Later requests, while it still hangs, start no other fetch.
    for _ in 0..10 {
        verifier.verify(&token).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fetches.load(SeqCst), 2, "one fetch at a time");
}

/// A fetch that failed is not tried again by every request: with no keys
/// at all, once a second; with keys known, the cached ones serve and an
/// unknown `kid` asks at most every ten seconds.
#[tokio::test]
async fn a_failed_fetch_is_not_repeated_by_every_request() {
    use std::sync::atomic::Ordering::SeqCst;
    let (key, _) = SigningKey::generate();
    let jwks = serde_json::to_string(&jsonwebtoken::jwk::JwkSet {
        keys: vec![key.public_jwk().clone()],
    })
    .unwrap();
    let issuer = Issuer::new(key, policy());
    let (mode, fetches) = (
        std::sync::Arc::new(std::sync::atomic::AtomicU8::new(FAIL)),
        std::sync::Arc::default(),
    );
    let url = jwks_endpoint(
        jwks,
        std::sync::Arc::clone(&mode),
        std::sync::Arc::clone(&fetches),
    )
    .await;
    let verifier = remote_verifier(url);
    let token = issuer
        .issue(Uuid::now_v7(), &[Role::Customer])
        .unwrap()
        .token;
    for _ in 0..20 {
        let refused = verifier.verify(&token).await;
        assert!(
            matches!(refused, Err(AuthError::KeysUnavailable(_))),
            "{refused:?}"
        );
    }
    let after_failures = fetches.load(SeqCst);
    assert!(
        after_failures <= 2,
        "{after_failures} fetches for 20 tokens"
    );

    // The user module back: a second on, the keys are fetched.
    mode.store(SERVE, SeqCst);
    tokio::time::sleep(REFETCH_UNUSABLE_INTERVAL + Duration::from_millis(100)).await;
    verifier.verify(&token).await.unwrap();

    // Stale and failing again: the cached keys serve; tokens of unknown
    // keys are refused without a fetch each.
    age_keys(&verifier, JWKS_TTL + Duration::from_secs(1)).await;
    mode.store(FAIL, SeqCst);
    let before = fetches.load(SeqCst);
    verifier.verify(&token).await.unwrap();
    let (stranger, _) = SigningKey::generate();
    let stranger = Issuer::new(stranger, policy());
    let unknown = stranger
        .issue(Uuid::now_v7(), &[Role::Customer])
        .unwrap()
        .token;
    for _ in 0..20 {
        assert!(verifier.verify(&unknown).await.is_err());
        verifier.verify(&token).await.unwrap();
    }
    assert_eq!(fetches.load(SeqCst), before + 1);
}
