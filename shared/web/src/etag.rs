//! Conditional GETs: an `ETag` on every successful GET, `304 Not Modified`
//! when the client already has that version.
//!
//! The tag is a hash of the body ([`tag_of`]), so it changes exactly when
//! the representation does, whatever produced it (a cache, the database).
//! A response that brings its own `ETag` keeps it and is not hashed again:
//! a cached representation made its tag with [`tag_of`] when it was cached,
//! and a remote module's, forwarded by the gateway, was tagged there. The
//! condition is then checked against that tag (for a forwarded answer the
//! remote module has checked it already, with the same result). A tagged
//! answer that does not say how to cache it gets `Cache-Control: no-cache`,
//! and its 304 the same `Cache-Control` as its 200.

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
    // A HEAD's answer has no body to tag (its length is the GET's: a
    // gateway passes on the module's); only a tag it carries is used.
    let head = *request.method() == Method::HEAD;
    let if_none_match = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut response = next.call(request).await?.map_into_boxed_body();
    if !conditional || response.status() != StatusCode::OK {
        return Ok(response);
    }
    if let Some(etag) = response.headers().get(header::ETAG).cloned() {
        // Tagged already: answer the condition with that tag, hash nothing.
        check_before_reuse(response.headers_mut());
        if !if_none_match.is_some_and(|candidates| matches(&candidates, etag.as_bytes())) {
            return Ok(response);
        }
        let (request, response) = response.into_parts();
        let (head, _) = response.into_parts();
        return Ok(ServiceResponse::new(request, not_modified(&head, etag)));
    }
    if head {
        return Ok(response);
    }
    // Only whole bodies of known, modest size are tagged; streams pass through.
    let small = matches!(response.response().body().size(), actix_web::body::BodySize::Sized(n) if n <= MAX_TAGGED_BODY as u64);
    if !small {
        return Ok(response);
    }
    let (request, response) = response.into_parts();
    let (mut head, body) = response.into_parts();
    // A body made whole (JSON, text) is taken as it is; only a stream is
    // read into a buffer of its own.
    let bytes = match body.try_into_bytes() {
        Ok(bytes) => bytes,
        Err(body) => actix_web::body::to_bytes(body)
            .await
            .map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string()))?,
    };
    let etag = tag_of(&bytes);
    check_before_reuse(head.headers_mut());
    if if_none_match.is_some_and(|candidates| matches(&candidates, etag.as_bytes())) {
        return Ok(ServiceResponse::new(request, not_modified(&head, etag)));
    }
    let mut response = head.set_body(BoxBody::new(bytes));
    response.headers_mut().insert(header::ETAG, etag);
    Ok(ServiceResponse::new(request, response))
}

/// The `ETag` of a representation whose body is `body`: the first half of
/// its SHA-256 in hex, quoted. What the middleware sends for an untagged
/// body; a handler that keeps a representation (a cache) tags it with this
/// once and sends the tag itself.
pub fn tag_of(body: &[u8]) -> HeaderValue {
    let tag = quoted_hex_prefix(&Sha256::digest(body));
    // Quotes and hex digits only: always a valid header value.
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// Whether an `If-None-Match` list names `etag` (weakly, as RFC 9110 says
/// for this header), or is `*`.
fn matches(candidates: &str, etag: &[u8]) -> bool {
    candidates.trim() == "*"
        || candidates
            .split(',')
            .any(|c| c.trim().trim_start_matches("W/").as_bytes() == etag)
}

/// A tagged response that does not say how to cache it: keep it, but
/// check with us before using it again (`no-cache`).
fn check_before_reuse(headers: &mut header::HeaderMap) {
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
}

/// `304 Not Modified` for a response whose head is `head`: its validators'
/// company (`Cache-Control`, `Vary`) and the tag, no body.
fn not_modified(head: &HttpResponse<()>, etag: HeaderValue) -> HttpResponse {
    let mut not_modified = HttpResponse::NotModified().finish();
    for (name, value) in head.headers() {
        if name == header::CACHE_CONTROL || name == header::VARY {
            not_modified
                .headers_mut()
                .append(name.clone(), value.clone());
        }
    }
    not_modified.headers_mut().insert(header::ETAG, etag);
    not_modified
}

/// The request's `If-Match` (RFC 9110 13.1.1), for a handler that changes
/// a resource only if it is still the version its caller read: that
/// version's `ETag`, from a GET. Absent: the change is unconditional.
/// A value that is not text names no version, so it never matches.
#[derive(Debug, Clone, Default)]
pub struct IfMatch(pub Option<String>);

impl IfMatch {
    /// Whether the resource, now tagged `current`, may be changed: no
    /// condition, `*` (it exists), or a listed tag equal to `current` by
    /// strong comparison (a weak `W/"..."` never matches).
    pub fn allows(&self, current: &HeaderValue) -> bool {
        let Some(candidates) = &self.0 else {
            return true;
        };
        candidates.trim() == "*"
            || candidates
                .split(',')
                .map(str::trim)
                .any(|c| !c.starts_with("W/") && c.as_bytes() == current.as_bytes())
    }
}

impl actix_web::FromRequest for IfMatch {
    type Error = Error;
    type Future = std::future::Ready<Result<IfMatch, Error>>;

    fn from_request(
        request: &actix_web::HttpRequest,
        _: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        let values: Vec<String> = request
            .headers()
            .get_all(header::IF_MATCH)
            .map(|v| v.to_str().unwrap_or("\"\"").to_owned())
            .collect();
        std::future::ready(Ok(IfMatch((!values.is_empty()).then(|| values.join(", ")))))
    }
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
    use super::{IfMatch, matches, quoted_hex_prefix, tag_of};

    #[test]
    fn if_match_compares_strongly_and_a_star_matches_what_exists() {
        let tag = tag_of(b"{}");
        let text = tag.to_str().unwrap().to_owned();
        let allows = |value: Option<&str>| IfMatch(value.map(str::to_owned)).allows(&tag);
        assert!(allows(None), "no condition");
        assert!(allows(Some(&text)));
        assert!(allows(Some(&format!("\"other\", {text}"))));
        assert!(allows(Some(" * ")));
        assert!(!allows(Some(&format!("W/{text}"))), "weak never matches");
        assert!(!allows(Some("\"other\"")));
        assert!(!allows(Some("")));
    }

    #[test]
    fn a_list_matches_when_it_names_the_tag_weakly_or_is_a_star() {
        let tag = tag_of(b"{}");
        let tag = tag.to_str().unwrap();
        assert_eq!(tag.len(), 34);
        assert!(matches(tag, tag.as_bytes()));
        assert!(matches(&format!("\"x\" , W/{tag}"), tag.as_bytes()));
        assert!(matches(" * ", tag.as_bytes()));
        assert!(!matches("\"x\", \"y\"", tag.as_bytes()));
        assert!(!matches("", tag.as_bytes()));
        assert_ne!(tag_of(b"{ }"), tag_of(b"{}"));
    }

    #[actix_web::test]
    async fn a_304_carries_the_cache_control_its_200_would() {
        use actix_web::http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH, VARY};
        use actix_web::{App, HttpResponse, middleware::from_fn, test, web};
        let app = test::init_service(
            App::new()
                .wrap(from_fn(super::middleware))
                .route("/plain", web::get().to(|| async { "hello" }))
                .route(
                    "/tagged",
                    web::get().to(|| async {
                        HttpResponse::Ok()
                            .insert_header((ETAG, tag_of(b"hello")))
                            .body("hello")
                    }),
                )
                .route(
                    "/own",
                    web::get().to(|| async {
                        HttpResponse::Ok()
                            .insert_header((CACHE_CONTROL, "private, max-age=9"))
                            .append_header((VARY, "accept"))
                            .append_header((VARY, "origin"))
                            .body("hello")
                    }),
                ),
        )
        .await;
        for (path, cache_control) in [
            ("/plain", "no-cache"),
            ("/tagged", "no-cache"),
            ("/own", "private, max-age=9"),
        ] {
            let ok =
                test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
            assert_eq!(ok.status(), 200);
            assert_eq!(
                ok.headers().get(CACHE_CONTROL).unwrap(),
                cache_control,
                "{path}"
            );
            let etag = ok.headers().get(ETAG).unwrap().clone();
            assert_eq!(etag, tag_of(b"hello"));
            let again = test::TestRequest::get()
                .uri(path)
                .insert_header((IF_NONE_MATCH, etag.clone()))
                .to_request();
            let not_modified = test::call_service(&app, again).await;
            assert_eq!(not_modified.status(), 304, "{path}");
            assert_eq!(not_modified.headers().get(ETAG), Some(&etag), "{path}");
            assert_eq!(
                not_modified.headers().get(CACHE_CONTROL).unwrap(),
                cache_control,
                "{path}"
            );
            let vary = |r: &actix_web::dev::ServiceResponse| r.headers().get_all(VARY).count();
            assert_eq!(vary(&not_modified), vary(&ok), "{path}: every Vary line");
        }
        let own = test::TestRequest::get().uri("/own").to_request();
        assert_eq!(
            test::call_service(&app, own)
                .await
                .headers()
                .get_all(VARY)
                .count(),
            2
        );
    }

    #[test]
    fn the_tag_is_the_quoted_hex_of_the_first_sixteen_bytes() {
        let digest: Vec<u8> = (0..32).map(|i| i * 8 + 1).collect();
        let expected: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        assert_eq!(quoted_hex_prefix(&digest), format!("\"{expected}\""));
        assert_eq!(quoted_hex_prefix(&[0xff, 0x00, 0xa5]), "\"ff00a5\"");
    }
}
