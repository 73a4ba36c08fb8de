//! Calls to a module served by another process, shared by every `-api`
//! crate's HTTP client.
//!
//! [`ModuleClient`] turns a [`CallContext`] into headers (`x-request-id`,
//! the caller's bearer token), runs every call through the dependency's
//! [`Policy`] (bulkhead, deadline shortened by the caller's, circuit
//! breaker, per-attempt timeout, retries for idempotent calls), and sorts
//! answers into a body, a problem (for the `-api` crate to map back to its
//! error enum), unavailability or a [`Degradation`].

pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use kernel::{CallContext, Degradation, ProblemBody};
use reqwest::{Method, RequestBuilder, StatusCode};
use resilience::{Policy, PolicyError, Verdict};
use serde::de::DeserializeOwned;
use tracing::Instrument as _;
use url::Url;

/// A failed call, before the `-api` crate maps it to its own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteError {
    /// The module answered with an RFC 9457 problem.
    Problem(ProblemBody),
    /// The module could not be reached, timed out, said 502/503/504, or
    /// answered outside its API (unreadable, too large, a redirect, a 4xx
    /// without a problem body).
    Unavailable(String),
    /// The policy cut the call short.
    Degraded(Degradation),
    /// A request this process could not send again (a body that cannot be
    /// cloned): a bug of ours.
    Unexpected(String),
}

/// The HTTP side of one remote module.
#[derive(Debug, Clone)]
pub struct ModuleClient {
    http: reqwest::Client,
    base: Url,
    module: &'static str,
    policy: Arc<Policy>,
}

/// The longest `Retry-After` taken from a peer: a day. A peer's number is
/// not trusted to be sane (`u64::MAX` seconds once overflowed the time a
/// retry would be due, a panic).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// The `Retry-After` of a response, in seconds, at most [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The largest answer read from another shop process: far above any page
/// of the API (a hundred products of 5,000-character descriptions is some
/// 600 kB), and what one broken peer can make this process hold.
pub const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Why an answer's body was not read whole ([`read_capped`]).
#[derive(Debug)]
pub enum BodyError {
    /// It is larger than the cap (said so by its `Content-Length`, or found
    /// so while reading): nothing more is read.
    TooLarge,
    /// The connection broke or timed out while reading.
    Broke(reqwest::Error),
}

/// Reads `response`'s body, up to `cap` bytes: a peer that sends more (a
/// broken process, a hostile provider) costs at most `cap` of memory,
/// where `Response::bytes` would hold whatever it sent.
///
/// # Errors
/// [`BodyError`].
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|length| length > cap as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Broke)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether a status means "the dependency is failing, try again later".
pub fn is_retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
    )
}

/// Whether a module's answer is its considered refusal of this one call
/// rather than a failure of the module: a 503 whose problem names a
/// [`Degradation`], the module shedding load (a full bulkhead, a search
/// that found no turn) or a dependency of its own cut short by its policy
/// (an open breaker, no time left). The module answered, on purpose: its
/// caller's breaker, shared by every call to the module, does not count it
/// (else one overloaded route, or one failing dependency behind the module,
/// would cut every call to the module off), and the caller does not retry
/// it (each hop retrying what the next one shed multiplies the load the
/// refusal sheds); the refusal, with its `Retry-After`, goes back to whoever
/// asked (a module client returns it as `RemoteError::Degraded`). A slow
/// refusal still counts as a slow call.
pub fn is_refusal(status: StatusCode, problem: Option<&ProblemBody>) -> bool {
    refusal(status, problem, 1).is_some()
}

/// The [`Degradation`] a refusal ([`is_refusal`]) names, with the
/// `Retry-After` it came with; `None` for any other answer.
pub fn refusal(
    status: StatusCode,
    problem: Option<&ProblemBody>,
    retry_after_secs: u64,
) -> Option<Degradation> {
    if status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let problem = problem?;
    if SHED_CODES.contains(&problem.code.as_str()) {
        return Some(Degradation::Overloaded);
    }
    Degradation::from_code(&problem.code, retry_after_secs)
}

/// Codes a module sheds work with on purpose, besides the shared
/// degradations: a 503 it answers at once, with `Retry-After`, for work it
/// could do a moment later (the user module's password hashing, at its
/// bound). A refusal like `dependency_overloaded`: a sign-in burst must not
/// open the breaker every call to the user module goes through.
const SHED_CODES: &[&str] = &["password_hashing_busy"];

/// The [`Degradation`] a policy error reports: the policy cut the call
/// short (breaker open, bulkhead full, out of time). `None` for a failed or
/// timed-out attempt.
pub fn degradation<E>(error: &PolicyError<E>) -> Option<Degradation> {
    match error {
        PolicyError::Failed(_) | PolicyError::Timeout => None,
        PolicyError::DeadlineExceeded => Some(Degradation::DeadlineExceeded),
        PolicyError::BreakerOpen { retry_after } => Some(Degradation::CircuitOpen {
            retry_after_secs: whole_seconds(*retry_after),
        }),
        PolicyError::BulkheadFull => Some(Degradation::Overloaded),
    }
}

/// A wait as a `Retry-After` says it: whole seconds, rounded up (a client
/// told 9 for 9.5 comes back to the same refusal), at least one.
pub fn whole_seconds(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The policy's verdict turned into the error callers see.
pub fn degraded<E>(
    error: PolicyError<E>,
    inner: impl FnOnce(E) -> RemoteError,
    module: &str,
) -> RemoteError {
    if let Some(degradation) = degradation(&error) {
        return RemoteError::Degraded(degradation);
    }
    match error {
        PolicyError::Failed(e) => inner(e),
        _ => RemoteError::Unavailable(format!("the {module} module did not answer in time")),
    }
}

impl ModuleClient {
    /// A client for `module` served at `base` (`http://catalog:8080`),
    /// calling through `policy`.
    pub fn new(
        http: reqwest::Client,
        base: Url,
        module: &'static str,
        policy: Arc<Policy>,
    ) -> ModuleClient {
        ModuleClient {
            http,
            base,
            module,
            policy,
        }
    }

    /// A request to `/api/v1{path}` on behalf of `cx`.
    pub fn request(&self, cx: &CallContext, method: Method, path: &str) -> RequestBuilder {
        let url = format!("{}/api/v1{path}", self.base.as_str().trim_end_matches('/'));
        let mut builder = self
            .http
            .request(method, url)
            .header("x-request-id", cx.request_id().as_str());
        if let Some(token) = cx.bearer_token() {
            builder = builder.bearer_auth(token);
        }
        // The time left goes along, so the callee's own calls stop when
        // this caller gives up (rounded up: never sent as 0, which an
        // expired deadline never reaches here, the policy refusing first).
        if let Some(left) = cx.remaining() {
            let ms = left.as_millis().max(1);
            builder = builder.header(CallContext::DEADLINE_HEADER, ms.to_string());
        }
        builder
    }

    /// Sends (through the policy; retried only when `idempotent`) and reads
    /// a JSON answer.
    ///
    /// # Errors
    /// [`RemoteError`] saying how the call failed.
    pub async fn send<T: DeserializeOwned>(
        &self,
        cx: &CallContext,
        builder: RequestBuilder,
        idempotent: bool,
    ) -> Result<T, RemoteError> {
        let module = self.module;
        let attempt_timeout = self.policy.attempt_timeout();
        let policy_deadline = self.policy.deadline();
        let started = std::time::Instant::now();
        let outcome = self
            .policy
            .call(cx.remaining(), idempotent, || {
                // The time this attempt has, told afresh each time, as the
                // policy times it: the caller's time left and the policy's
                // own, and never more than the attempt's timeout, after
                // which the policy gives it up (and may send another while
                // the callee still works on this one).
                let policy_left = policy_deadline.saturating_sub(started.elapsed());
                let given = cx
                    .remaining()
                    .map_or(policy_left, |left| left.min(policy_left))
                    .min(attempt_timeout);
                let attempt = builder.try_clone().map(|attempt| {
                    let mut deadline = reqwest::header::HeaderMap::new();
                    let ms = given.as_millis().max(1).to_string();
                    if let Ok(value) = reqwest::header::HeaderValue::from_str(&ms) {
                        deadline.insert(CallContext::DEADLINE_HEADER, value);
                    }
                    // Replaces the header `request` set, if any.
                    attempt.headers(deadline)
                });
                async move {
                    let Some(attempt) = attempt else {
                        let error =
                            RemoteError::Unexpected("the request cannot be sent twice".to_owned());
                        return (
                            Err(error),
                            Verdict::Failed {
                                retryable: false,
                                retry_after: None,
                            },
                        );
                    };
                    // One client span per attempt; the server continues it.
                    let (attempt, span) = telemetry::trace::outgoing(attempt, module);
                    attempt_once::<T>(attempt, module).instrument(span).await
                }
            })
            .await;
        outcome.map_err(|e| degraded(e, |inner| inner, module))
    }
}

async fn attempt_once<T: DeserializeOwned>(
    builder: RequestBuilder,
    module: &str,
) -> (Result<T, RemoteError>, Verdict) {
    let failed = |retryable, retry_after| Verdict::Failed {
        retryable,
        retry_after,
    };
    let response = match builder.send().await {
        Ok(response) => response,
        Err(e) => {
            // The answer names the module, never its URL or the error
            // text (they are logged).
            tracing::warn!(module, error = %e, "module call failed");
            let reason = if e.is_connect() {
                format!("cannot connect to the {module} module")
            } else {
                format!("the call to the {module} module failed")
            };
            return (
                Err(RemoteError::Unavailable(reason)),
                failed(e.is_connect() || e.is_timeout() || e.is_request(), None),
            );
        }
    };
    let status = response.status();
    let wait = retry_after(response.headers());
    let bytes = match read_capped(response, MAX_ANSWER).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            tracing::warn!(
                module,
                cap = MAX_ANSWER,
                "module answer too large; not read"
            );
            let error =
                RemoteError::Unavailable(format!("the {module} module's answer is too large"));
            return (Err(error), failed(false, None));
        }
        Err(BodyError::Broke(e)) => {
            tracing::warn!(module, error = %e, "module answer broke off");
            let error = RemoteError::Unavailable(format!("the {module} module's answer broke off"));
            return (Err(error), failed(true, None));
        }
    };
    if status.is_success() {
        return match serde_json::from_slice::<T>(&bytes) {
            Ok(value) => (Ok(value), Verdict::Healthy),
            // Truncated or garbled: the dependency misbehaved, which is no
            // bug of ours (503, not 500).
            Err(e) => {
                tracing::warn!(module, error = %e, "module answer unreadable");
                (
                    Err(RemoteError::Unavailable(format!(
                        "the {module} module's answer is unreadable"
                    ))),
                    failed(true, None),
                )
            }
        };
    }
    let problem = serde_json::from_slice::<ProblemBody>(&bytes).ok();
    // A refusal: the degradation the module names, with the wait it asked for.
    let retry_after_secs = wait.map_or(1, whole_seconds);
    if let Some(degradation) = refusal(status, problem.as_ref(), retry_after_secs) {
        return (Err(RemoteError::Degraded(degradation)), Verdict::Healthy);
    }
    // A rate limit is the module's answer on purpose, like a refusal: its
    // breaker does not count it and it is not retried here; the caller sees
    // load shed (503 `dependency_overloaded` with `Retry-After`), not a 500.
    // (The module calls of the shop itself are not counted against the
    // per-client limit, `web::ratelimit::Client::Shop`; a per-account
    // limit behind a module is what this meets.)
    if status == StatusCode::TOO_MANY_REQUESTS {
        return (
            Err(RemoteError::Degraded(Degradation::Overloaded)),
            Verdict::Healthy,
        );
    }
    if is_retryable(status) || status.is_server_error() {
        let error = match problem {
            Some(problem) => RemoteError::Problem(problem),
            None => RemoteError::Unavailable(format!("the {module} module answered {status}")),
        };
        return (Err(error), failed(is_retryable(status), wait));
    }
    match problem {
        Some(problem) => (Err(RemoteError::Problem(problem)), Verdict::Healthy),
        // A redirect, or a 4xx that is no module's problem (a proxy's page,
        // a login wall in front of the module): not the module's answer, and
        // no bug of ours either. Unavailable (503, not 500), counted by the
        // breaker, not retried (it would answer the same).
        None => {
            tracing::warn!(module, %status, "module answer is no problem of its API");
            (
                Err(RemoteError::Unavailable(format!(
                    "the {module} module answered {status} without a problem body"
                ))),
                failed(false, None),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_s_retry_after_is_read_up_to_a_day() {
        let headers = |value: &str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::RETRY_AFTER, value.parse().unwrap());
            headers
        };
        assert_eq!(retry_after(&headers("3")), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after(&headers("18446744073709551615")),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(retry_after(&headers("soon")), None);
    }

    #[tokio::test]
    async fn a_failed_call_is_reported_without_the_url_or_the_error_text() {
        // A server that takes the connection and hangs up without answering.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        tls::install_crypto_provider();
        let client = reqwest::Client::new();
        let request = client.get(format!(
            "http://127.0.0.1:{port}/api/v1/products/secret-path"
        ));
        let (result, _) = attempt_once::<serde_json::Value>(request, "catalog").await;
        let Err(RemoteError::Unavailable(reason)) = result else {
            panic!("expected unavailable, got {result:?}");
        };
        assert_eq!(reason, "the call to the catalog module failed");
    }

    /// A server that answers every request with the 503 problem `answer`
    /// and `Retry-After: retry_after`, counting them.
    async fn answering(
        answer: &'static str,
        retry_after: u64,
    ) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        answering_with("503 Service Unavailable", answer, retry_after).await
    }

    async fn answering_with(
        status: &'static str,
        answer: &'static str,
        retry_after: u64,
    ) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0_u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/problem+json\r\n\
                         retry-after: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        retry_after,
                        answer.len()
                    );
                    drop(socket.write_all(head.as_bytes()).await);
                    drop(socket.write_all(answer.as_bytes()).await);
                });
            }
        });
        (port, seen)
    }

    fn policy() -> Arc<Policy> {
        let settings = resilience::PolicySettings {
            attempt_timeout_ms: 2000,
            deadline_ms: 5000,
            max_retries: 2,
            retry_base_ms: 1,
            retry_max_ms: 1,
            retry_budget_percent: 100.0,
            retry_budget_min_per_sec: 100.0,
            max_concurrent: 8,
            breaker: resilience::BreakerSettings {
                window_size: 3,
                minimum_calls: 3,
                failure_rate_threshold: 50.0,
                slow_call_rate_threshold: 100.0,
                slow_call_ms: 2000,
                wait_open_ms: 60_000,
                half_open_calls: 1,
            },
        };
        Arc::new(Policy::new("catalog", settings))
    }

    async fn call(port: u16, policy: &Arc<Policy>) -> RemoteError {
        tls::install_crypto_provider();
        let base = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let client = ModuleClient::new(reqwest::Client::new(), base, "catalog", Arc::clone(policy));
        let cx = CallContext::background();
        let request = client.request(&cx, Method::GET, "/products");
        client
            .send::<serde_json::Value>(&cx, request, true)
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn a_module_shedding_load_is_answered_once_and_never_opens_the_breaker() {
        let shed = r#"{"type":"urn:shop:problem:dependency_overloaded","title":"Service Unavailable","status":503,"code":"dependency_overloaded"}"#;
        let (port, seen) = answering(shed, 1).await;
        let policy = policy();
        for _ in 0..5 {
            assert_eq!(
                call(port, &policy).await,
                RemoteError::Degraded(Degradation::Overloaded)
            );
        }
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            5,
            "no retries"
        );
        assert_eq!(policy.state(), resilience::State::Closed);
    }

    /// The user module's password hashing at its bound (a sign-in burst)
    /// is its answer, not its failure: no retry, and the breaker every call
    /// to the module shares stays closed.
    #[tokio::test]
    async fn a_module_shedding_with_its_own_code_never_opens_the_breaker() {
        let busy = r#"{"type":"urn:shop:problem:password_hashing_busy","title":"Service Unavailable","status":503,"code":"password_hashing_busy"}"#;
        let (port, seen) = answering(busy, 1).await;
        let policy = policy();
        for _ in 0..12 {
            assert_eq!(
                call(port, &policy).await,
                RemoteError::Degraded(Degradation::Overloaded)
            );
        }
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            12,
            "no retries"
        );
        assert_eq!(policy.state(), resilience::State::Closed);
    }

    #[tokio::test]
    async fn a_module_rate_limiting_is_load_shed_once_and_never_opens_the_breaker() {
        let limited = r#"{"type":"urn:shop:problem:rate_limited","title":"Too Many Requests","status":429,"code":"rate_limited"}"#;
        let (port, seen) = answering_with("429 Too Many Requests", limited, 1).await;
        let policy = policy();
        for _ in 0..5 {
            assert_eq!(
                call(port, &policy).await,
                RemoteError::Degraded(Degradation::Overloaded)
            );
        }
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            5,
            "no retries"
        );
        assert_eq!(policy.state(), resilience::State::Closed);
    }

    #[tokio::test]
    async fn a_refusal_keeps_the_wait_the_module_asked_for() {
        let open = r#"{"type":"urn:shop:problem:dependency_circuit_open","title":"Service Unavailable","status":503,"code":"dependency_circuit_open"}"#;
        let (port, seen) = answering(open, 7).await;
        let policy = policy();
        assert_eq!(
            call(port, &policy).await,
            RemoteError::Degraded(Degradation::CircuitOpen {
                retry_after_secs: 7
            })
        );
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A redirect or a 4xx without a problem body (a proxy's or a login
    /// wall's page in front of the module) is unavailability: a 503 for
    /// the caller, not a 500; sent once, and counted by the breaker.
    #[tokio::test]
    async fn an_answer_outside_the_module_s_api_is_unavailability_counted_by_the_breaker() {
        for status in ["302 Found", "401 Unauthorized", "404 Not Found"] {
            let (port, seen) = answering_with(status, "<html>elsewhere</html>", 0).await;
            let policy = policy();
            for _ in 0..3 {
                let error = call(port, &policy).await;
                assert!(
                    matches!(&error, RemoteError::Unavailable(reason) if reason.contains("without a problem body")),
                    "{status}: {error:?}"
                );
            }
            assert_eq!(
                seen.load(std::sync::atomic::Ordering::SeqCst),
                3,
                "{status}: never retried"
            );
            assert_eq!(policy.state(), resilience::State::Open, "{status}");
        }
    }

    #[tokio::test]
    async fn a_module_that_cannot_serve_is_retried_and_opens_the_breaker() {
        let down = r#"{"type":"urn:shop:problem:catalog_unavailable","title":"Service Unavailable","status":503,"code":"catalog_unavailable"}"#;
        let (port, seen) = answering(down, 1).await;
        let policy = policy();
        assert!(matches!(call(port, &policy).await, RemoteError::Problem(_)));
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "two retries"
        );
        assert_eq!(policy.state(), resilience::State::Open);
    }

    /// Each attempt tells the callee the time it is given: the caller's
    /// time left, never more than the attempt's timeout (2 s here), also
    /// when the caller set no deadline, and once only (sent again, it
    /// replaces the value the request was built with).
    #[tokio::test]
    async fn each_attempt_carries_at_most_its_own_timeout() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        tls::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = tokio::spawn(async move {
            let mut heads = Vec::new();
            for _ in 0..2 {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0_u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    request.extend_from_slice(&buf[..n]);
                }
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                              content-length: 2\r\nconnection: close\r\n\r\n{}";
                socket.write_all(answer.as_bytes()).await.unwrap();
                heads.push(String::from_utf8(request).unwrap().to_ascii_lowercase());
            }
            heads
        });
        let base = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let client = ModuleClient::new(reqwest::Client::new(), base, "catalog", policy());
        for cx in [
            CallContext::background(),
            CallContext::background().with_timeout(std::time::Duration::from_secs(60)),
        ] {
            let request = client.request(&cx, Method::GET, "/products");
            client
                .send::<serde_json::Value>(&cx, request, true)
                .await
                .unwrap();
        }
        for head in heads.await.unwrap() {
            let sent: Vec<u64> = head
                .lines()
                .filter_map(|l| l.strip_prefix("x-shop-deadline-ms: "))
                .map(|v| v.trim().parse().unwrap())
                .collect();
            assert!(
                matches!(sent.as_slice(), [ms] if (1..=2000).contains(ms)),
                "{sent:?}"
            );
        }
    }

    /// The time the caller has left goes with the call, for the callee's
    /// own calls (`web::RequestCx` takes it from the shop's calls).
    #[tokio::test]
    async fn a_call_carries_the_time_left() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        tls::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let head = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0_u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                          content-length: 2\r\nconnection: close\r\n\r\n{}";
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap().to_ascii_lowercase()
        });
        let base = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let client = ModuleClient::new(reqwest::Client::new(), base, "catalog", policy());
        let cx = CallContext::background().with_timeout(std::time::Duration::from_millis(800));
        let request = client.request(&cx, Method::GET, "/products");
        client
            .send::<serde_json::Value>(&cx, request, true)
            .await
            .unwrap();
        let head = head.await.unwrap();
        let sent: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("x-shop-deadline-ms: "))
            .expect("the deadline header")
            .trim()
            .parse()
            .unwrap();
        assert!((1..=800).contains(&sent), "{sent}");
    }

    #[test]
    fn a_wait_is_told_in_whole_seconds_rounded_up() {
        use std::time::Duration;
        assert_eq!(whole_seconds(Duration::from_millis(9_500)), 10);
        assert_eq!(whole_seconds(Duration::from_secs(9)), 9);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn only_a_503_naming_a_degradation_is_a_refusal() {
        let problem = |code: &str| ProblemBody::new(503, code, "title", None);
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        for code in [
            "dependency_overloaded",
            "dependency_circuit_open",
            "deadline_exceeded",
            "password_hashing_busy",
        ] {
            assert!(is_refusal(unavailable, Some(&problem(code))), "{code}");
            assert!(
                !is_refusal(StatusCode::BAD_GATEWAY, Some(&problem(code))),
                "{code}"
            );
        }
        assert!(!is_refusal(
            unavailable,
            Some(&problem("catalog_unavailable"))
        ));
        assert!(!is_refusal(unavailable, None));
    }

    #[test]
    fn only_overload_and_gateway_failures_are_retried() {
        for status in [429, 502, 503, 504] {
            assert!(
                is_retryable(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [400, 404, 409, 422, 500, 501] {
            assert!(
                !is_retryable(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_garbage_is_ignored() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, " 7 ".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
