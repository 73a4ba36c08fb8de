//! Authentication per request, and extractors that say who may call a route.

use std::future::{Ready, ready};

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{Error, FromRequest, HttpMessage as _, HttpRequest};
use kernel::{Caller, Role};
use web::Problem;

use crate::{AuthError, Verifier};

/// The outcome of checking the request's bearer token, kept in the request
/// extensions. Absent when the request carries no `authorization` header.
#[derive(Debug, Clone)]
struct Authentication(Result<Caller, AuthError>);

/// Verifies the bearer token, if any, once per request. A valid token puts
/// its [`Caller`] in the request extensions (where `web::RequestCx` finds
/// it); an invalid one is remembered, and fails only the routes that need a
/// caller, so a stale token does not break public routes.
///
/// # Errors
/// Only those of the inner service.
pub async fn middleware(
    request: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let header = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    if let Some(header) = header {
        let outcome = match (
            web::bearer_token(&header),
            request.app_data::<Data<Verifier>>(),
        ) {
            (Some(token), Some(verifier)) => verifier.verify(token.trim()).await,
            (None, _) => Err(AuthError::Malformed),
            (Some(_), None) => Err(AuthError::KeysUnavailable(
                "this process verifies no tokens".to_owned(),
            )),
        };
        if let Ok(caller) = &outcome {
            request.extensions_mut().insert(caller.clone());
            tracing::Span::current().record("user.id", tracing::field::display(caller.user_id));
        }
        request.extensions_mut().insert(Authentication(outcome));
    }
    next.call(request).await
}

fn caller_of(req: &HttpRequest) -> Result<Caller, Problem> {
    match req.extensions().get::<Authentication>() {
        None => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this route needs a bearer token (POST /api/v1/auth/token)",
        )),
        Some(Authentication(Ok(caller))) => Ok(caller.clone()),
        Some(Authentication(Err(AuthError::KeysUnavailable(reason)))) => {
            tracing::warn!(reason = %reason, "cannot verify tokens");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "tokens cannot be verified right now",
            ))
        }
        Some(Authentication(Err(error))) => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            error.to_string(),
        )),
    }
}

/// A route any signed-in user may call.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl FromRequest for Authenticated {
    type Error = Error;
    type Future = Ready<Result<Authenticated, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(caller_of(req).map(Authenticated).map_err(Into::into))
    }
}

/// A route only admins may call: 401 without a valid token, 403 for others.
#[derive(Debug, Clone)]
pub struct AdminOnly(pub Caller);

impl FromRequest for AdminOnly {
    type Error = Error;
    type Future = Ready<Result<AdminOnly, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = caller_of(req).and_then(|caller| {
            if caller.has(Role::Admin) {
                Ok(AdminOnly(caller))
            } else {
                Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this route is for admins",
                ))
            }
        });
        ready(result.map_err(Into::into))
    }
}

#[cfg(test)]
mod tests {
    use web::bearer_token as bearer;

    #[test]
    fn the_scheme_is_named_in_any_case_and_nothing_else_passes() {
        assert_eq!(bearer("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer("bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer("BEARER abc.def"), Some("abc.def"));
        assert_eq!(bearer("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer("Bearerabc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
