//! The gateway role: a remote module's `/api/v1` routes are forwarded to
//! the process serving it, so clients never need to know the topology.
//!
//! The request id and every end-to-end header (the caller's
//! `authorization` included) travel on; hop-by-hop headers do not. The
//! answer comes back as it is, streamed.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web::{self as aweb, Bytes};
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse};
use kernel::RequestId;
use url::Url;
use web::Problem;

/// A module served by another process.
#[derive(Debug)]
struct Upstream {
    module: &'static str,
    base: Url,
    client: reqwest::Client,
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
];

/// Registers forwarding routes for `prefixes` (relative to `/api/v1`).
pub(crate) fn configure(
    cfg: &mut aweb::ServiceConfig,
    module: &'static str,
    prefixes: &[&str],
    base: Url,
    client: reqwest::Client,
) {
    let upstream = Arc::new(Upstream {
        module,
        base,
        client,
    });
    for prefix in prefixes {
        for path in [prefix.to_string(), format!("{prefix}/{{tail:.*}}")] {
            let upstream = Arc::clone(&upstream);
            cfg.service(
                aweb::resource(path).to(move |req: HttpRequest, body: Bytes| {
                    let upstream = Arc::clone(&upstream);
                    async move { forward(&upstream, &req, body).await }
                }),
            );
        }
    }
}

async fn forward(
    upstream: &Upstream,
    req: &HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, Problem> {
    let mut url = upstream.base.clone();
    url.set_path(req.uri().path());
    url.set_query(req.uri().query());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).map_err(|_| {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "unsupported method",
        )
    })?;

    let mut outgoing = upstream.client.request(method, url).body(body);
    for (name, value) in req.headers() {
        // Our own request id and client address replace whatever came in.
        if !HOP_BY_HOP.contains(&name.as_str())
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
        let client = web::ratelimit::client_ip(req.peer_addr(), req.headers(), &[])
            .unwrap_or_else(|| peer.ip());
        outgoing = outgoing.header(web::ratelimit::FORWARDED_FOR, client.to_string());
    }

    let answer = outgoing.send().await.map_err(|e| {
        tracing::warn!(module = upstream.module, error = %e, "forwarding failed");
        if e.is_timeout() {
            Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("the {} module did not answer in time", upstream.module),
            )
        } else {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                format!("the {} module cannot be reached", upstream.module),
            )
        }
    })?;

    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            response.append_header((name.as_str(), value.as_bytes()));
        }
    }
    Ok(response.streaming(answer.bytes_stream()))
}
