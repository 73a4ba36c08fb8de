//! The gateway role: a remote module's `/api/v1` routes are forwarded to
//! the process serving it, so clients never need to know the topology.
//!
//! The request id and every end-to-end header (the caller's
//! `authorization` included) travel on; hop-by-hop headers do not, nor
//! those a message's `Connection` header names (RFC 9110 §7.6.1). The
//! answer comes back as it is. It is read whole within the call's policy
//! (its attempt timeout, deadline and bulkhead slot cover the body as well
//! as the head, and a body cut off midway is the module's failure, retried
//! when the request is safe to send twice, then a 502
//! `upstream_answer_broken`, not a truncated 200 for the client: a write
//! may have been applied); only an answer larger than [`MAX_READ_BYTES`]
//! streams on past the policy, as it comes, and a HEAD's answer goes back
//! without a body to read. A module's considered refusal
//! (503 naming a degradation: it sheds load, or a dependency of its own is
//! cut off) is its answer, not its failure: passed back once, never
//! retried, and not counted by the module's breaker (`remote::is_refusal`).

use futures_util::StreamExt as _;
use std::sync::Arc;
use tracing::Instrument as _;

use actix_web::http::StatusCode;
use actix_web::web::{self as aweb, Bytes};
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse};
use kernel::RequestId;
use url::Url;
use web::Problem;

/// A module served by another process.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) module: &'static str,
    pub(crate) base: Url,
    pub(crate) client: reqwest::Client,
    pub(crate) policy: Arc<resilience::Policy>,
    /// Proxies in front of this process whose `x-forwarded-for` names the
    /// client (`rate_limit.trusted_proxies`): the module is told that
    /// client, not the proxy.
    pub(crate) trusted: Arc<[web::ratelimit::TrustedProxy]>,
}

/// A module's answer on its way back to the client.
enum Answer {
    /// Read whole within the call's policy.
    Read {
        status: reqwest::StatusCode,
        headers: reqwest::header::HeaderMap,
        body: Bytes,
    },
    /// Larger than [`MAX_READ_BYTES`] (or a HEAD's, which has no body to
    /// read): what was read, then the rest as it comes, past the policy.
    Streamed {
        head: Bytes,
        rest: reqwest::Response,
    },
}

/// Why a forward's attempt failed.
enum Failed {
    /// No answer: the module could not be reached, or did not answer.
    Unreachable,
    /// The answer's head came, then its body broke off, or a request not
    /// safe to send twice was sent and its answer never came: the module
    /// may have done what was asked (a 502 for the client, never a 503 that
    /// invites a retry of a write).
    Broken,
    /// The module's own failure (a 5xx, a 429), passed back as it is.
    Answered(Answer),
}

/// The largest answer read whole within the call's policy. The API's
/// answers are pages of at most 100 items, far below it; a larger one
/// streams on as it comes, so that no forward holds more than this in
/// memory.
const MAX_READ_BYTES: usize = 1024 * 1024;

/// Reads `response` whole, or up to [`MAX_READ_BYTES`] and no further (or
/// nothing, when its `Content-Length` says it is larger, or it answers a
/// HEAD: its `Content-Length` is the GET's, and goes back as it is).
async fn read(mut response: reqwest::Response, head: bool) -> Result<Answer, reqwest::Error> {
    let length = response.content_length();
    let large = length.is_some_and(|n| n > MAX_READ_BYTES as u64);
    let mut body = aweb::BytesMut::with_capacity(if large || head {
        0
    } else {
        length.map_or(0, |n| usize::try_from(n).unwrap_or(0))
    });
    if !large && !head {
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_READ_BYTES {
                break;
            }
        }
        if body.len() <= MAX_READ_BYTES {
            let headers = std::mem::take(response.headers_mut());
            return Ok(Answer::Read {
                status: response.status(),
                headers,
                body: body.freeze(),
            });
        }
    }
    Ok(Answer::Streamed {
        head: body.freeze(),
        rest: response,
    })
}

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    // Not in the RFC, but sent by old clients and proxies in place of
    // `connection`.
    "proxy-connection",
];

/// Whether `name` belongs to this connection alone: one of [`HOP_BY_HOP`],
/// or one the message's own `Connection` header names (`connection` holds
/// those names, lower-case).
fn hop_by_hop(name: &str, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || connection.iter().any(|named| named == name)
}

/// The header names a message's `Connection` values list (RFC 9110
/// §7.6.1), lower-case: they are for this hop, and go no further.
fn named_by_connection<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .filter_map(|value| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Registers forwarding routes for the module's documented `templates`
/// (so that a forward's metrics and span name its template, as the
/// module's own do), then for anything else below its `prefixes` (relative
/// to `/api/v1`; the module answers those, with a 404 if nothing else).
pub(crate) fn configure(
    cfg: &mut aweb::ServiceConfig,
    upstream: Upstream,
    templates: &[&str],
    prefixes: &[&str],
) {
    let upstream = Arc::new(upstream);
    // `templates` come literal segments first (`routes::Wiring`): the
    // first that matches names the route.
    let documented = templates.iter().map(|t| (*t).to_owned());
    let rest = prefixes
        .iter()
        .filter(|prefix| !templates.contains(prefix))
        .map(|prefix| (*prefix).to_owned())
        .chain(
            prefixes
                .iter()
                .map(|prefix| format!("{prefix}/{{tail:.*}}")),
        );
    for path in documented.chain(rest) {
        let upstream = Arc::clone(&upstream);
        cfg.service(aweb::resource(path).to(
            move |req: HttpRequest, body: Result<Bytes, actix_web::Error>| {
                let upstream = Arc::clone(&upstream);
                async move {
                    // A body over the limit or past its deadline is
                    // answered here, as a module would.
                    let body = body.map_err(|e| web::deadline::body_problem(&e))?;
                    forward(&upstream, &req, body).await
                }
            },
        ));
    }
}

/// Whether `path` could climb out of where it is sent: a `.` or `..`
/// segment, written out or percent-encoded, which the URL's parser would
/// resolve, so that `/api/v1/products/../../admin` would reach the module
/// host's `/admin`, or another service behind a module URL's shared proxy;
/// or a separator a proxy further on may see where this one saw none: a
/// backslash (one in http URLs), an encoded `/` or `\` (nginx decodes
/// `..%2f` into `../` and resolves it), or any of these encoded twice. No
/// path of the API holds them.
fn climbs(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    ["\\", "%5c", "%2f", "%252e", "%252f", "%255c"]
        .iter()
        .any(|hidden| lower.contains(hidden))
        || lower.split('/').any(|segment| {
            let segment = segment.replace("%2e", ".");
            segment == "." || segment == ".."
        })
}

/// Whether a request may be sent again after an attempt that may have
/// reached the module: reads, PUT and DELETE, and the POSTs that honour an
/// `Idempotency-Key` when they carry one (`order_api::KEYED_POSTS`,
/// `inventory_api::is_keyed_post`). Any other POST or PATCH goes once: a
/// key on a route that ignores it makes nothing safe.
fn safe_to_send_twice(req: &HttpRequest) -> bool {
    safe_to_send_twice_as(req.method().as_str(), req.path(), || {
        req.headers().contains_key("idempotency-key")
    })
}

fn safe_to_send_twice_as(method: &str, path: &str, keyed: impl Fn() -> bool) -> bool {
    match method {
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" => true,
        "POST" => {
            keyed()
                && path.strip_prefix("/api/v1").is_some_and(|path| {
                    order_api::KEYED_POSTS.contains(&path) || inventory_api::is_keyed_post(path)
                })
        }
        _ => false,
    }
}

/// Registers routes for `prefixes` of a module this process neither serves
/// nor forwards: they answer 503 naming the module (the route exists in the
/// API; this deployment does not reach its module from here), never 404.
pub(crate) fn configure_unserved(
    cfg: &mut aweb::ServiceConfig,
    module: &'static str,
    prefixes: &[&str],
) {
    for prefix in prefixes {
        for path in [prefix.to_string(), format!("{prefix}/{{tail:.*}}")] {
            cfg.service(aweb::resource(path).to(move || async move {
                Err::<HttpResponse, _>(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "module_not_served",
                    format!(
                        "the {module} module is not served by this process: enable it here \
                         (modules.enabled) or forward it (modules.{module}.mode = \"remote\" and \
                         modules.{module}.url)"
                    ),
                ))
            }));
        }
    }
}

async fn forward(
    upstream: &Upstream,
    req: &HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, Problem> {
    if climbs(req.uri().path()) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "a path with `.` or `..` segments or a backslash is not forwarded",
        ));
    }
    let mut url = upstream.base.clone();
    // Below the URL's own path, if it has one (`http://edge/catalog`), as
    // the module clients call it.
    let path = format!("{}{}", url.path().trim_end_matches('/'), req.uri().path());
    url.set_path(&path);
    url.set_query(req.uri().query());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).map_err(|_| {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "unsupported method",
        )
    })?;

    let mut outgoing = upstream.client.request(method, url).body(body);
    let connection = named_by_connection(
        req.headers()
            .get_all(actix_web::http::header::CONNECTION)
            .map(actix_web::http::header::HeaderValue::as_bytes),
    );
    for (name, value) in req.headers() {
        // Our own request id and client address replace whatever came in.
        if !hop_by_hop(name.as_str(), &connection)
            && name.as_str() != web::observe::REQUEST_ID_HEADER
            && name.as_str() != web::ratelimit::FORWARDED_FOR
        {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    if let Some(request_id) = req.extensions().get::<RequestId>() {
        outgoing = outgoing.header(web::observe::REQUEST_ID_HEADER, request_id.as_str());
    }
    if let Some(peer) = req.peer_addr() {
        // The client as this process's own limits see it: behind a trusted
        // proxy (an Ingress), the one its `x-forwarded-for` names.
        let client = web::ratelimit::client_ip(req.peer_addr(), req.headers(), &upstream.trusted)
            .unwrap_or_else(|| peer.ip());
        outgoing = outgoing.header(web::ratelimit::FORWARDED_FOR, client.to_string());
    }

    let idempotent = safe_to_send_twice(req);
    // A HEAD's answer has no body to judge: its 503 stays a failure.
    let head = req.method() == actix_web::http::Method::HEAD;
    let answer = upstream
        .policy
        .call(None, idempotent, || {
            let attempt = outgoing.try_clone();
            async move {
                let Some(attempt) = attempt else {
                    return (
                        Err(Failed::Unreachable),
                        resilience::Verdict::Failed {
                            retryable: false,
                            retry_after: None,
                        },
                    );
                };
                // The client span of this attempt replaces any trace
                // context that came in (passed through when traces are off);
                // it covers the answer's body too.
                let (attempt, span) = telemetry::trace::outgoing(attempt, "forward");
                async move {
                    let response = match attempt.send().await {
                        Ok(response) => response,
                        Err(e) => {
                            tracing::warn!(module = upstream.module, error = %e, "forwarding failed");
                            // Sent, then no answer (the connection reset, a
                            // timeout): a write may have been applied.
                            let applied = !idempotent && !e.is_connect();
                            return (
                                Err(if applied {
                                    Failed::Broken
                                } else {
                                    Failed::Unreachable
                                }),
                                resilience::Verdict::Failed {
                                    retryable: e.is_connect() || e.is_timeout(),
                                    retry_after: None,
                                },
                            );
                        }
                    };
                    let status = response.status();
                    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                        && !head
                        && is_problem(response.headers())
                    {
                        return read_problem(response, upstream.module).await;
                    }
                    // The client's own budget at the module (429) is its
                    // answer, not a failure of the module (the breaker is
                    // everyone's); any other retryable status or 5xx is the
                    // module's failure, its answer going back to the client
                    // as it is.
                    let verdict = if status != reqwest::StatusCode::TOO_MANY_REQUESTS
                        && (remote::is_retryable(status) || status.is_server_error())
                    {
                        resilience::Verdict::Failed {
                            retryable: remote::is_retryable(status),
                            retry_after: remote::retry_after(response.headers()),
                        }
                    } else {
                        resilience::Verdict::Healthy
                    };
                    let answered = status != reqwest::StatusCode::TOO_MANY_REQUESTS
                        && matches!(verdict, resilience::Verdict::Healthy);
                    match read(response, head).await {
                        Ok(answer) if answered => (Ok(answer), verdict),
                        Ok(answer) => (Err(Failed::Answered(answer)), verdict),
                        // Cut off midway: the module's failure, whatever
                        // its status said (tried again only when the
                        // request is safe to send twice).
                        Err(e) => {
                            tracing::warn!(module = upstream.module, error = %e, "a module's answer broke off");
                            (
                                Err(Failed::Broken),
                                resilience::Verdict::Failed {
                                    retryable: true,
                                    retry_after: None,
                                },
                            )
                        }
                    }
                }
                .instrument(span)
                .await
            }
        })
        .await;
    let module = upstream.module;
    let answer = match answer {
        Ok(response) | Err(resilience::PolicyError::Failed(Failed::Answered(response))) => response,
        Err(resilience::PolicyError::Failed(Failed::Broken)) => {
            return Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream_answer_broken",
                format!(
                    "the {module} module's answer broke off, or never came after the request \
                     was sent; a request that changes something may have been applied: read \
                     before trying again"
                ),
            ));
        }
        Err(resilience::PolicyError::BreakerOpen { retry_after }) => {
            let seconds = remote::whole_seconds(retry_after);
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "dependency_circuit_open",
                format!("the {module} module is failing; calls resume in {seconds} s"),
            )
            .with_retry_after(seconds));
        }
        Err(resilience::PolicyError::BulkheadFull) => {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "dependency_overloaded",
                format!("too many calls to the {module} module are in flight"),
            )
            .with_retry_after(1));
        }
        Err(resilience::PolicyError::Timeout | resilience::PolicyError::DeadlineExceeded) => {
            return Err(Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("the {module} module did not answer in time"),
            ));
        }
        Err(resilience::PolicyError::Failed(Failed::Unreachable)) => {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                format!("the {module} module cannot be reached"),
            ));
        }
    };

    let (status, headers) = match &answer {
        Answer::Streamed { rest, .. } => (rest.status(), rest.headers()),
        Answer::Read {
            status, headers, ..
        } => (*status, headers),
    };
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    let connection = named_by_connection(
        headers
            .get_all(reqwest::header::CONNECTION)
            .iter()
            .map(reqwest::header::HeaderValue::as_bytes),
    );
    for (name, value) in headers {
        if !hop_by_hop(name.as_str(), &connection) {
            response.append_header((name.as_str(), value.as_bytes()));
        }
    }
    // A HEAD's answer says the GET's length (`content-length` is this
    // hop's header, written by the server for the body it sends: none).
    if head && let Some(length) = content_length(headers) {
        response.no_chunking(length);
    }
    Ok(match answer {
        Answer::Read { body, .. } => response.body(body),
        Answer::Streamed { head, rest } => response.streaming(
            futures_util::stream::once(async move { Ok::<_, reqwest::Error>(head) })
                .chain(rest.bytes_stream()),
        ),
    })
}

/// An answer's `Content-Length`, if it has a valid one.
fn content_length(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The largest problem body read whole to judge it; a larger one is no
/// module's problem and streams on as a failure.
const MAX_PROBLEM_BYTES: u64 = 64 * 1024;

/// Whether an answer's body is a problem (RFC 9457) of a size read whole.
fn is_problem(headers: &reqwest::header::HeaderMap) -> bool {
    let problem = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    problem && content_length(headers).is_some_and(|n| n <= MAX_PROBLEM_BYTES)
}

/// Reads a module's 503 problem and judges it: a refusal (`remote::is_refusal`)
/// is the module's answer (healthy, so neither retried nor counted by the
/// breaker; `refused` in `remote_calls_total`); any other 503 is its
/// failure, retried within the budget after its `Retry-After`. Either way
/// the client gets the module's problem as it came.
async fn read_problem(
    response: reqwest::Response,
    module: &'static str,
) -> (Result<Answer, Failed>, resilience::Verdict) {
    let status = response.status();
    let headers = response.headers().clone();
    let retry_after = remote::retry_after(&headers);
    let failed = resilience::Verdict::Failed {
        retryable: true,
        retry_after,
    };
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(module, error = %e, "a module's answer broke off");
            // A 503's: the module did not do it.
            return (Err(Failed::Unreachable), failed);
        }
    };
    let problem = serde_json::from_slice::<kernel::ProblemBody>(&body).ok();
    let verdict = if remote::is_refusal(status, problem.as_ref()) {
        resilience::Verdict::Healthy
    } else {
        failed
    };
    let answer = Answer::Read {
        status,
        headers,
        body,
    };
    (Err(Failed::Answered(answer)), verdict)
}

#[cfg(test)]
mod tests {
    use super::{climbs, safe_to_send_twice_as};

    /// A POST goes again only to a route that honours its key, and only
    /// with one: the checkout and a stock adjustment.
    #[test]
    fn only_keyed_posts_to_routes_that_honour_the_key_go_twice() {
        for (method, path, keyed, twice) in [
            ("POST", "/api/v1/orders", true, true),
            ("POST", "/api/v1/orders", false, false),
            ("POST", "/api/v1/inventory/MUG-1/adjustments", true, true),
            ("POST", "/api/v1/inventory/MUG-1/adjustments", false, false),
            ("POST", "/api/v1/inventory//adjustments", true, false),
            ("POST", "/api/v1/inventory/MUG-1/adjustments/x", true, false),
            ("POST", "/api/v1/inventory/reservations", true, false),
            ("POST", "/api/v1/products", true, false),
            ("PATCH", "/api/v1/products/x", true, false),
            ("PUT", "/api/v1/cart", false, true),
        ] {
            assert_eq!(
                safe_to_send_twice_as(method, path, || keyed),
                twice,
                "{method} {path} keyed {keyed}"
            );
        }
    }

    #[test]
    fn a_path_that_could_climb_out_is_caught_in_every_spelling() {
        for path in [
            "/api/v1/products/../../admin",
            "/api/v1/products/./x",
            "/api/v1/products/%2e%2E/x",
            "/api/v1/products/.%2e",
            "/api/v1/products/..\\x",
            "/api/v1/products/%5C..",
            "/api/v1/products/..%2f..%2Fother",
            "/api/v1/products/%252e%252e%252fother",
        ] {
            assert!(climbs(path), "{path}");
        }
        for path in [
            "/api/v1/products/a.b",
            "/api/v1/inventory/SKU-1.5",
            "/api/v1/products/...",
            "/api/v1/products/%2e%2e%2e",
        ] {
            assert!(!climbs(path), "{path}");
        }
    }
}
