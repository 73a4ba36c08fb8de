//! Who may call a route. **Seam:** authentication arrives with the user
//! module (issue 3); until then [`AdminOnly`] lets every caller through, and
//! the routes that take it are marked admin-only in the OpenAPI spec.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload};

/// Extractor of admin-only routes. Today it admits everyone (see the module
/// doc); the token check goes here and nowhere else.
#[derive(Debug, Clone, Copy)]
pub struct AdminOnly;

impl FromRequest for AdminOnly {
    type Error = actix_web::Error;
    type Future = Ready<Result<AdminOnly, actix_web::Error>>;

    fn from_request(_req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(AdminOnly))
    }
}
