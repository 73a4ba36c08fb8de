//! [`RequestCx`]: the call context of the current request.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpMessage as _, HttpRequest, dev::Payload};
use kernel::{CallContext, Caller, RequestId};

/// The [`CallContext`] of this request: its request id, the verified
/// caller (when the `auth` middleware accepted a token) and that token,
/// ready to hand to another module, and the deadline a module of another
/// process sent with its call ([`CallContext::DEADLINE_HEADER`], taken
/// from the shop's own calls only).
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
            if caller.has(kernel::Role::Service)
                && let Some(left) = sent_deadline(req)
            {
                cx = cx.with_timeout(left);
            }
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

/// The time left that a calling module sent, at most
/// [`CallContext::MAX_RECEIVED_DEADLINE`].
fn sent_deadline(req: &HttpRequest) -> Option<std::time::Duration> {
    let ms: u64 = req
        .headers()
        .get(CallContext::DEADLINE_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(std::time::Duration::from_millis(ms).min(CallContext::MAX_RECEIVED_DEADLINE))
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's
/// name in any case (RFC 9110 §11.1: `bearer`, `BEARER`).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use std::time::Duration;

    fn cx_of(caller: Option<kernel::Role>, deadline: Option<&str>) -> CallContext {
        let mut request = TestRequest::default();
        if let Some(ms) = deadline {
            request = request.insert_header((CallContext::DEADLINE_HEADER, ms));
        }
        let req = request.to_http_request();
        if let Some(role) = caller {
            req.extensions_mut().insert(Caller {
                user_id: uuid::Uuid::now_v7(),
                roles: vec![role],
            });
        }
        RequestCx::extract(&req).into_inner().unwrap().0
    }

    /// A module's call brings the time its caller has left; a client's
    /// header is nobody's deadline, and a huge one is capped.
    #[test]
    fn only_the_shops_own_calls_bring_a_deadline() {
        let left = cx_of(Some(kernel::Role::Service), Some("1500"))
            .remaining()
            .unwrap();
        assert!(left <= Duration::from_millis(1500) && left > Duration::from_millis(1000));
        assert_eq!(
            cx_of(Some(kernel::Role::Customer), Some("1500")).remaining(),
            None
        );
        assert_eq!(cx_of(None, Some("1500")).remaining(), None);
        assert_eq!(
            cx_of(Some(kernel::Role::Service), Some("soon")).remaining(),
            None
        );
        assert_eq!(cx_of(Some(kernel::Role::Service), None).remaining(), None);
        let capped = cx_of(Some(kernel::Role::Service), Some("999999999999"))
            .remaining()
            .unwrap();
        assert!(capped <= CallContext::MAX_RECEIVED_DEADLINE);
    }
}
