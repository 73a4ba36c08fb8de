//! Conditional GETs: an `ETag` on every successful GET, `304 Not Modified`
//! when the client already has that version.
//!
//! The tag is a hash of the body, so it changes exactly when the
//! representation does, whatever produced it (a cache, the database).
//! Responses that bring their own `ETag` (a remote module's, forwarded by
//! the gateway) are left alone: that module answered the condition itself.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse};
use sha2::{Digest as _, Sha256};

/// Bodies larger than this are sent without an ETag (hashing them is not worth it).
const MAX_TAGGED_BODY: usize = 4 * 1024 * 1024;

/// The middleware; wrap it inside `observe::middleware`.
///
/// # Errors
/// Only those of the inner service.
pub async fn middleware<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let conditional = matches!(*request.method(), Method::GET | Method::HEAD);
    let if_none_match = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = next.call(request).await?.map_into_boxed_body();
    // Only whole bodies of known, modest size are tagged; streams pass through.
    let small = matches!(response.response().body().size(), actix_web::body::BodySize::Sized(n) if n <= MAX_TAGGED_BODY as u64);
    if !conditional
        || !small
        || response.status() != StatusCode::OK
        || response.headers().contains_key(header::ETAG)
    {
        return Ok(response);
    }
    let (request, response) = response.into_parts();
    let (head, body) = response.into_parts();
    let bytes = actix_web::body::to_bytes(body)
        .await
        .map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string()))?;
    let digest = Sha256::digest(&bytes);
    let etag = quoted_hex_prefix(&digest);
    let matches = if_none_match.is_some_and(|candidates| {
        candidates.trim() == "*"
            || candidates
                .split(',')
                .any(|c| c.trim().trim_start_matches("W/") == etag)
    });
    let mut response = if matches {
        let mut not_modified = HttpResponse::NotModified().finish();
        for (name, value) in head.headers() {
            if name == header::CACHE_CONTROL || name == header::VARY {
                not_modified
                    .headers_mut()
                    .insert(name.clone(), value.clone());
            }
        }
        not_modified
    } else {
        head.set_body(BoxBody::new(bytes))
    };
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    if !response.headers().contains_key(header::CACHE_CONTROL) {
        // Keep it, but check with us before using it again.
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    Ok(ServiceResponse::new(request, response))
}

/// The first 16 bytes of `digest` in lower-case hex, in double quotes: the
/// tag, written into one string (a `format!` per byte was ~2 % of a small
/// request's CPU).
fn quoted_hex_prefix(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for byte in digest.iter().take(16) {
        tag.push(char::from(HEX[usize::from(byte >> 4)]));
        tag.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    tag.push('"');
    tag
}

#[cfg(test)]
mod tests {
    use super::quoted_hex_prefix;

    #[test]
    fn the_tag_is_the_quoted_hex_of_the_first_sixteen_bytes() {
        let digest: Vec<u8> = (0..32).map(|i| i * 8 + 1).collect();
        let expected: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        assert_eq!(quoted_hex_prefix(&digest), format!("\"{expected}\""));
        assert_eq!(quoted_hex_prefix(&[0xff, 0x00, 0xa5]), "\"ff00a5\"");
    }
}
