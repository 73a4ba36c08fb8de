//! `GET /.well-known/jwks.json`: the public keys access tokens are checked with.

use actix_web::web::Data;
use actix_web::{HttpResponse, get};
use web::ApiError;

use crate::{AuthError, Verifier};

impl kernel::ProblemCode for AuthError {
    fn status(&self) -> u16 {
        match self {
            AuthError::KeysUnavailable(_) => 503,
            _ => 401,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AuthError::KeysUnavailable(_) => "auth_unavailable",
            _ => "invalid_token",
        }
    }
}

/// The JSON Web Key Set of the keys this process accepts (RFC 7517): the
/// current signing key and any retired ones still honoured.
#[utoipa::path(
    tag = "auth",
    responses(
        (status = 200, description = "JWKS", content_type = "application/json", body = Object),
        (status = 503, description = "The keys cannot be fetched from the user module", body = kernel::ProblemBody),
    ),
)]
#[get("/.well-known/jwks.json")]
pub async fn jwks(verifier: Data<Verifier>) -> Result<HttpResponse, ApiError<AuthError>> {
    let jwks = verifier.jwks().await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=300"))
        .json(jwks))
}
