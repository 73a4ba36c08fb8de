//! RFC 9457 problem details for every error the API returns.
//!
//! Module errors implement [`kernel::ProblemCode`] in their `-api` crate and
//! are returned from handlers as [`ApiError<E>`] (`?` converts). Errors that
//! are not a module's (bad JSON, unknown route, oversized body ...) are
//! [`Problem`]s made by the extractor configs below. [`ensure_problem`] is
//! the safety net for anything else: no error leaves as HTML or plain text.
//!
//! A 5xx is logged once, here, with its cause; its body says only that
//! something went wrong and which request id to quote.

use std::fmt;

use actix_web::body::BoxBody;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use kernel::{FieldError, ProblemBody, ProblemCode};

/// An error response in `application/problem+json`.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    retry_after: Option<u64>,
    // Boxed: errors travel through `Result`s on hot paths; keep them small.
    body: Box<ProblemBody>,
}

impl Problem {
    /// A problem with a stable `code` and a human `detail`.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
        let title = status.canonical_reason().unwrap_or("Error");
        Problem {
            status,
            retry_after: None,
            body: Box::new(ProblemBody::new(
                status.as_u16(),
                code,
                title,
                Some(detail.into()),
            )),
        }
    }

    /// A 422 listing invalid fields.
    pub fn validation(errors: Vec<FieldError>) -> Problem {
        let mut problem = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "some fields are invalid",
        );
        problem.body.errors = errors;
        problem
    }

    /// The problem a module error presents. 5xx causes are logged here.
    pub fn from_error<E: ProblemCode>(error: &E) -> Problem {
        let status =
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let detail = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %error, error.debug = ?error, code = error.code(), "request failed");
            "an unexpected error occurred; quote the request id when reporting it".to_owned()
        } else {
            if status.is_server_error() {
                tracing::warn!(error = %error, code = error.code(), "request failed");
            }
            error.to_string()
        };
        let mut problem = Problem::new(status, error.code(), detail);
        problem.body.errors = error.field_errors();
        problem.body.current_status = error.current_status().map(str::to_owned);
        problem.body.decline_code = error.decline_code();
        problem.retry_after = error.retry_after();
        problem
    }

    /// The same problem telling the client to retry after `seconds`.
    pub fn with_retry_after(mut self, seconds: u64) -> Problem {
        self.retry_after = Some(seconds);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body as it will be sent.
    pub fn body(&self) -> &ProblemBody {
        &self.body
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.body.code)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = (*self.body).clone();
        body.request_id = crate::current_request_id().map(|id| id.to_string());
        let mut response = HttpResponse::build(self.status);
        response.content_type(ProblemBody::CONTENT_TYPE);
        match (self.retry_after, self.status) {
            (Some(seconds), _) => {
                response.insert_header((header::RETRY_AFTER, seconds.to_string()));
            }
            (None, StatusCode::SERVICE_UNAVAILABLE) => {
                response.insert_header((header::RETRY_AFTER, "5"));
            }
            _ => {}
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: say how to authenticate, and what was wrong.
            let challenge = match self.body.code.as_str() {
                "invalid_token" => r#"Bearer realm="shop", error="invalid_token""#,
                _ => r#"Bearer realm="shop""#,
            };
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        response.json(body)
    }
}

/// A module error on its way out of a handler; `?` wraps it.
pub struct ApiError<E>(pub E);

impl<E> From<E> for ApiError<E> {
    fn from(error: E) -> ApiError<E> {
        ApiError(error)
    }
}

impl<E: fmt::Debug> fmt::Debug for ApiError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: fmt::Display> fmt::Display for ApiError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: ProblemCode + fmt::Debug + fmt::Display> ResponseError for ApiError<E> {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        Problem::from_error(&self.0).error_response()
    }
}

/// Whether a media type is JSON (`application/json` or `application/*+json`,
/// so `application/merge-patch+json` is accepted for PATCH).
fn is_json(mime: actix_web::mime::Mime) -> bool {
    mime.type_() == actix_web::mime::APPLICATION
        && (mime.subtype() == actix_web::mime::JSON || mime.suffix() == Some(actix_web::mime::JSON))
}

/// JSON bodies: at most `limit` bytes, JSON content types only, and every
/// failure a problem (415, 413, 400 malformed, 422 well-formed but wrong).
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type(is_json)
        .content_type_required(true)
        .error_handler(|err, _req| json_problem(&err).into())
}

fn json_problem(err: &JsonPayloadError) -> Problem {
    match err {
        JsonPayloadError::ContentType => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON: send `Content-Type: application/json`",
        ),
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than the limit of {limit} bytes"),
        ),
        JsonPayloadError::Deserialize(e) if e.is_data() => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("the body does not match the expected shape: {e}"),
        ),
        JsonPayloadError::Deserialize(e) => Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            format!("the body is not valid JSON: {e}"),
        ),
        JsonPayloadError::Payload(e) if crate::deadline::is_timeout(e) => {
            crate::deadline::timeout_problem()
        }
        other => Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            format!("the body could not be read: {other}"),
        ),
    }
}

/// Path parameters that do not parse (an id that is not a UUID) → 400.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        let detail = match &err {
            PathError::Deserialize(e) => format!("invalid path parameter: {e}"),
            other => format!("invalid path: {other}"),
        };
        Problem::new(StatusCode::BAD_REQUEST, "invalid_path_parameter", detail).into()
    })
}

/// Query strings that do not parse (`limit=abc`) → 400.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        let detail = match &err {
            QueryPayloadError::Deserialize(e) => format!("invalid query parameter: {e}"),
            other => format!("invalid query: {other}"),
        };
        Problem::new(StatusCode::BAD_REQUEST, "invalid_query_parameter", detail).into()
    })
}

/// Raw bodies (`Bytes`, `String`): the same size limit.
pub fn payload_config(limit: usize) -> web::PayloadConfig {
    web::PayloadConfig::new(limit)
}

/// A route answering every request with 405 `method_not_allowed` and
/// `Allow: <allow>`. A module registers it on a concrete path right after
/// that path's operations, so that the path's other methods are not taken
/// by a templated path of the same shape: OpenAPI matches concrete paths
/// first, so `GET /inventory/reservations` is not `GET /inventory/{sku}`.
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::route().to(move |req: HttpRequest| async move { refuse_method(&req, allow) })
}

/// 405 `method_not_allowed` for `req`, with `Allow: <allow>` (the methods
/// its path answers, comma-separated).
pub fn refuse_method(req: &HttpRequest, allow: &str) -> HttpResponse {
    let mut response = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} {} is not an operation; this path answers {allow}",
            req.method(),
            req.path()
        ),
    )
    .error_response();
    if let Ok(value) = header::HeaderValue::from_str(allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// The answer for a path no route matches.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    Problem::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        format!("no route for {} {}", req.method(), req.path()),
    )
    .error_response()
}

/// Rewrites an error response whose body is not JSON (an error from a
/// middleware or from actix itself) into a problem with the same status and
/// headers. JSON bodies (problems, readiness reports) are left alone.
pub(crate) fn ensure_problem(
    response: actix_web::dev::ServiceResponse<BoxBody>,
) -> actix_web::dev::ServiceResponse<BoxBody> {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<actix_web::mime::Mime>().ok())
        .is_some_and(is_json);
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::NOT_FOUND => "route_not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_server_error() => "internal_error",
        _ => "bad_request",
    };
    let detail = status.canonical_reason().unwrap_or("error").to_lowercase();
    let (request, old) = response.into_parts();
    let mut fresh = Problem::new(status, code, detail).error_response();
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    actix_web::dev::ServiceResponse::new(request, fresh)
}
