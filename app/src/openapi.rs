//! The OpenAPI document: collected from every module's routes, whatever
//! the topology (a gateway forwards what it does not serve itself).

use actix_web::App;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt as _;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "The shop",
        description = "E-commerce API of a modular monolith. Errors are RFC 9457 \
            `application/problem+json` with a stable `code`; lists are keyset-paginated \
            (`limit`, opaque `cursor`, `next_cursor`). Every response carries `x-request-id`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "auth", description = "Sign-in, token refresh and sign-out; the public keys of access tokens"),
        (name = "users", description = "Accounts, profiles and roles"),
        (name = "catalog", description = "Products"),
        (name = "inventory", description = "Stock per SKU, its history, reservations"),
        (name = "orders", description = "Cart, checkout (with Idempotency-Key), orders and their timeline"),
        (name = "payments", description = "Card payments and their ledger (through the SANDBOX provider: test cards only)"),
        (name = "notifications", description = "Messages sent on events: email and signed webhooks"),
        (name = "events", description = "Integration events: dead letters"),
    ),
    // Referenced by a query parameter (`sort`), which does not register it.
    components(schemas(catalog_api::ProductSort)),
    modifiers(&SecurityAddon),
)]
struct BaseDoc;

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.bearer_format = Some("JWT".to_owned());
        bearer.description = Some(
            "Access token from `POST /api/v1/auth/token`. The scopes listed on an operation are \
             the roles allowed to call it; an empty list means any signed-in user."
                .to_owned(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
    }
}

/// The full document, as served at `/api-docs/openapi.json`.
pub fn api_doc() -> utoipa::openapi::OpenApi {
    let (_, collected) = App::new()
        .into_utoipa_app()
        .service(auth::jwks)
        .service(utoipa_actix_web::scope("/api/v1").configure(|cfg| {
            // The modules compiled into this binary (all of them by default:
            // the committed spec is the whole shop's).
            #[cfg(feature = "user")]
            user::http::configure(cfg);
            #[cfg(feature = "catalog")]
            catalog::http::configure(cfg);
            #[cfg(feature = "inventory")]
            inventory::http::configure(cfg);
            #[cfg(feature = "order")]
            order::http::configure(cfg);
            #[cfg(feature = "payment")]
            payment::http::configure(cfg);
            #[cfg(feature = "notification")]
            notification::http::configure(cfg);
            events::http::configure(cfg);
        }))
        .split_for_parts();
    let mut doc = BaseDoc::openapi();
    doc.merge(collected);
    doc
}

/// The document as pretty JSON with a trailing newline (what `shop openapi`
/// prints and `openapi/openapi.json` holds).
///
/// # Errors
/// Serialisation failure (not expected).
pub fn api_doc_json() -> serde_json::Result<String> {
    let mut text = serde_json::to_string_pretty(&api_doc())?;
    text.push('\n');
    Ok(text)
}
