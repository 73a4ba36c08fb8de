//! Text the database cannot store is refused at the door: PostgreSQL's
//! `text` holds any UTF-8 except the NUL character, so a NUL in a JSON
//! string or a query parameter would otherwise reach a query and fail
//! there as a 500. It is a 422 naming the field instead.
//!
//! The check costs one scan of the query string and of a JSON body for the
//! escape `\u0000` (JSON cannot carry a raw NUL byte); only a request that
//! has one is parsed to name the field.
//!
//! The same look at a JSON body refuses one that is not an object (422
//! `invalid_body`): every request body of the API is an object, and serde
//! would otherwise build a struct from an array (`[null, null]`).

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{Error, HttpMessage as _};
use kernel::FieldError;

use crate::Problem;

const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// Refuses requests whose query or JSON body carries a NUL character: 422
/// `validation_failed`, the field named (`query.<name>` or the body's path,
/// e.g. `items[0].name`).
///
/// # Errors
/// Only those of the inner service (a body that cannot be read is a problem
/// response: 413 over the limit, 400 otherwise).
pub async fn refuse_nul<B: MessageBody>(
    mut request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    let query = request.query_string();
    if query.contains("%00") {
        let fields = nul_query_fields(query);
        return Ok(refuse(request, fields));
    }
    // GET, HEAD, DELETE and OPTIONS carry no body the shop reads: one sent
    // anyway is left unread (and so unbuffered), as the handler leaves it.
    let reads_body = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
    );
    let is_json = reads_body
        && request.mime_type().ok().flatten().is_some_and(|mime| {
            mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json")
        });
    if is_json {
        let body = match request.extract::<Bytes>().await {
            Ok(body) => body,
            Err(e) => {
                // The same answers the JSON extractor gives.
                let problem = crate::deadline::body_problem(&e);
                let response = actix_web::ResponseError::error_response(&problem);
                return Ok(request.into_response(response).map_into_right_body());
            }
        };
        if let Some(kind) = not_an_object(&body) {
            let problem = Problem::new(
                actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("the body must be a JSON object, not {kind}"),
            );
            let response = actix_web::ResponseError::error_response(&problem);
            return Ok(request.into_response(response).map_into_right_body());
        }
        if has_nul_escape(&body) {
            let fields = serde_json::from_slice::<serde_json::Value>(&body)
                .map(|value| {
                    let mut found = Vec::new();
                    nul_paths(&value, String::new(), &mut found);
                    found
                })
                .unwrap_or_default();
            // Not valid JSON after all: the JSON extractor says so.
            if !fields.is_empty() {
                return Ok(refuse(request, fields));
            }
        }
        request.set_payload(actix_web::dev::Payload::from(body));
    }
    Ok(next.call(request).await?.map_into_left_body())
}

fn refuse<B>(request: ServiceRequest, fields: Vec<String>) -> ServiceResponse<EitherBody<B>> {
    let errors = fields
        .into_iter()
        .map(|field| FieldError::new(field, NUL_MESSAGE))
        .collect();
    let response = actix_web::ResponseError::error_response(&Problem::validation(errors));
    request.into_response(response).map_into_right_body()
}

/// What `body` is when it is JSON but not an object (`None` for an object,
/// for nothing, and for text that is not JSON, which the JSON extractor
/// answers).
fn not_an_object(body: &[u8]) -> Option<&'static str> {
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
    if *first == b'{' {
        return None;
    }
    match serde_json::from_slice::<serde_json::Value>(body).ok()? {
        serde_json::Value::Array(_) => Some("an array"),
        serde_json::Value::String(_) => Some("a string"),
        serde_json::Value::Number(_) => Some("a number"),
        serde_json::Value::Bool(_) => Some("a boolean"),
        serde_json::Value::Null => Some("null"),
        serde_json::Value::Object(_) => None,
    }
}

/// Whether `body` holds a JSON escape `\u0000` (an odd run of backslashes
/// before `u0000`; an even run is an escaped backslash followed by text).
fn has_nul_escape(body: &[u8]) -> bool {
    let mut start = 0;
    while let Some(at) = find(&body[start..], b"u0000").map(|i| i + start) {
        let backslashes = body[..at].iter().rev().take_while(|b| **b == b'\\').count();
        if backslashes % 2 == 1 {
            return true;
        }
        start = at + 1;
    }
    false
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The paths of strings (and object keys) holding a NUL.
fn nul_paths(value: &serde_json::Value, path: String, found: &mut Vec<String>) {
    let at = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        serde_json::Value::String(text) if text.contains('\0') => {
            found.push(if path.is_empty() {
                "body".to_owned()
            } else {
                path
            });
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = if path.is_empty() {
                    format!("[{i}]")
                } else {
                    format!("{path}[{i}]")
                };
                nul_paths(item, item_path, found);
            }
        }
        serde_json::Value::Object(members) => {
            for (key, member) in members {
                if key.contains('\0') {
                    found.push(at(&key.replace('\0', "\\u0000")));
                } else {
                    nul_paths(member, at(key), found);
                }
            }
        }
        _ => {}
    }
}

/// The query parameters whose name or value decodes to a NUL.
fn nul_query_fields(query: &str) -> Vec<String> {
    let mut fields: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(name, value)| name.contains('\0') || value.contains('\0'))
        .map(|(name, _)| format!("query.{}", name.replace('\0', "\\u0000")))
        .collect();
    if fields.is_empty() {
        fields.push("query".to_owned());
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_nul_escape_counts() {
        assert!(has_nul_escape(br#"{"name": "a\u0000b"}"#));
        assert!(has_nul_escape(br#"{"name": "\\\u0000"}"#));
        // An escaped backslash, then the text "u0000": six ordinary characters.
        assert!(!has_nul_escape(br#"{"name": "\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"name": "u0000"}"#));
    }

    #[test]
    fn a_body_must_be_an_object() {
        assert_eq!(not_an_object(br#" {"a": 1}"#), None);
        assert_eq!(not_an_object(b"[null, null]"), Some("an array"));
        assert_eq!(not_an_object(b"\n 12"), Some("a number"));
        assert_eq!(not_an_object(b"null"), Some("null"));
        // Not JSON, or no body: the extractor's answer (400).
        assert_eq!(not_an_object(b"[nul"), None);
        assert_eq!(not_an_object(b""), None);
    }

    #[test]
    fn the_field_is_named_by_its_path() {
        let value: serde_json::Value = serde_json::from_str(
            r#"{"name": "ok", "items": [{"sku": "x"}, {"sku": "a\u0000"}], "tags": ["\u0000"]}"#,
        )
        .unwrap();
        let mut found = Vec::new();
        nul_paths(&value, String::new(), &mut found);
        found.sort();
        assert_eq!(found, ["items[1].sku", "tags[0]"]);
        assert_eq!(nul_query_fields("q=a%00b&limit=5"), ["query.q"]);
    }
}
