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
                .map(|value| nul_paths(&value))
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

/// The most fields a refusal names, and the longest path it writes (in
/// bytes, then cut with `…`): a body of deep objects with long keys and
/// thousands of NUL strings once made paths of gigabytes, built and kept
/// for the answer, from one request of 256 KiB.
const MAX_FIELDS: usize = 20;
const MAX_PATH: usize = 200;

/// One step of a path into a JSON value.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The paths of the strings (and object keys) holding a NUL, in document
/// order, at most [`MAX_FIELDS`] of them, each at most [`MAX_PATH`] bytes.
/// A path is written only for a string found with a NUL; the walk keeps
/// the steps to it, not their text.
fn nul_paths(value: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(value, &mut Vec::new(), &mut found);
    found
}

fn walk<'a>(value: &'a serde_json::Value, steps: &mut Vec<Step<'a>>, found: &mut Vec<String>) {
    if found.len() >= MAX_FIELDS {
        return;
    }
    match value {
        serde_json::Value::String(text) if text.contains('\0') => found.push(path(steps, None)),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                steps.push(Step::Index(i));
                walk(item, steps, found);
                steps.pop();
                if found.len() >= MAX_FIELDS {
                    return;
                }
            }
        }
        serde_json::Value::Object(members) => {
            for (key, member) in members {
                if key.contains('\0') {
                    found.push(path(steps, Some(key)));
                } else {
                    steps.push(Step::Key(key));
                    walk(member, steps, found);
                    steps.pop();
                }
                if found.len() >= MAX_FIELDS {
                    return;
                }
            }
        }
        _ => {}
    }
}

/// `items[1].sku` for its steps (and a last key holding a NUL, escaped);
/// `body` for the body itself; cut at [`MAX_PATH`] bytes.
fn path(steps: &[Step<'_>], nul_key: Option<&str>) -> String {
    use std::fmt::Write as _;
    let mut path = String::new();
    let key = |path: &mut String, key: &str| {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    };
    for step in steps {
        match step {
            Step::Key(name) => key(&mut path, name),
            Step::Index(i) => {
                let _ = write!(path, "[{i}]");
            }
        }
        if path.len() > MAX_PATH {
            break;
        }
    }
    if let Some(name) = nul_key
        && path.len() <= MAX_PATH
    {
        key(&mut path, &name.replace('\0', "\\u0000"));
    }
    if path.len() > MAX_PATH {
        let mut cut = MAX_PATH;
        while !path.is_char_boundary(cut) {
            cut -= 1;
        }
        path.truncate(cut);
        path.push('…');
    }
    if path.is_empty() {
        path.push_str("body");
    }
    path
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
        assert_eq!(nul_paths(&value), ["items[1].sku", "tags[0]"]);
        let key: serde_json::Value = serde_json::from_str(r#"{"a": {"b\u0000": 1}}"#).unwrap();
        assert_eq!(nul_paths(&key), ["a.b\\u0000"]);
        let whole: serde_json::Value = serde_json::from_str(r#""\u0000""#).unwrap();
        assert_eq!(nul_paths(&whole), ["body"]);
        assert_eq!(nul_query_fields("q=a%00b&limit=5"), ["query.q"]);
    }

    /// A body of 256 KiB made to name as many long paths as it can (deep
    /// objects with long keys, then thousands of NUL strings) is answered
    /// with at most 20 fields of at most 200 bytes each (and the `…`).
    #[test]
    fn a_refusal_names_few_fields_with_short_paths_whatever_the_body() {
        let key = "k".repeat(1000);
        let mut body = String::new();
        for _ in 0..100 {
            body.push_str(&format!("{{\"{key}\": "));
        }
        body.push('[');
        body.push_str(&vec![r#""\u0000""#; 15_000].join(","));
        body.push(']');
        body.push_str(&"}".repeat(100));
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        let found = nul_paths(&value);
        assert_eq!(found.len(), MAX_FIELDS);
        for path in &found {
            assert!(path.len() <= MAX_PATH + '…'.len_utf8(), "{}", path.len());
            assert!(path.starts_with("kkk") && path.ends_with('…'), "{path}");
        }
    }
}
