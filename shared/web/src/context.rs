//! [`RequestCx`]: the call context of the current request.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpMessage as _, HttpRequest, dev::Payload};
use kernel::{CallContext, Caller, RequestId};

/// The [`CallContext`] of this request: its request id, the verified
/// caller (when the `auth` middleware accepted a token) and that token,
/// ready to hand to another module.
#[derive(Debug, Clone)]
pub struct RequestCx(pub CallContext);

impl FromRequest for RequestCx {
    type Error = actix_web::Error;
    type Future = Ready<Result<RequestCx, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(RequestId::generate);
        let mut cx = CallContext::for_request(request_id);
        if let Some(caller) = req.extensions().get::<Caller>() {
            cx = cx.with_caller(caller.clone());
        }
        let bearer = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        if let Some(token) = bearer {
            cx = cx.with_bearer_token(token);
        }
        ready(Ok(RequestCx(cx)))
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's
/// name in any case (RFC 9110 §11.1: `bearer`, `BEARER`).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}
