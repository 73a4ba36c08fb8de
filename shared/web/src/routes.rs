//! Where a module's routes go: a server worker's app, or the OpenAPI
//! document.

use actix_web::Route;
use actix_web::dev::HttpServiceFactory;
use utoipa_actix_web::OpenApiFactory;
use utoipa_actix_web::service_config::ServiceConfig as DocumentConfig;

/// Where a module's routes go. A module lists its routes once, in its
/// `configure(&mut Routes)`, and the same list is served and documented,
/// so the spec cannot leave a route out. Only the document pays for each
/// route's OpenAPI paths and schemas: `utoipa_actix_web` builds them on
/// every registration, which each server worker did again at start (some
/// milliseconds per worker, thrown away).
pub enum Routes<'c, 'a> {
    /// Registered on a server worker's app.
    Serve(&'c mut actix_web::web::ServiceConfig),
    /// Collected into the OpenAPI document (`app::openapi::api_doc`).
    Document(&'c mut DocumentConfig<'a>),
}

impl Routes<'_, '_> {
    /// A handler annotated with `#[utoipa::path]` and an actix route macro.
    pub fn service<F>(&mut self, factory: F) -> &mut Self
    where
        F: HttpServiceFactory + OpenApiFactory + 'static,
    {
        match self {
            Routes::Serve(config) => {
                config.service(factory);
            }
            Routes::Document(config) => {
                config.service(factory);
            }
        }
        self
    }

    /// A route the document does not list (e.g. a 405 for a method that
    /// was never offered).
    pub fn route(&mut self, path: &str, route: Route) -> &mut Self {
        match self {
            Routes::Serve(config) => {
                config.route(path, route);
            }
            Routes::Document(config) => {
                config.route(path, route);
            }
        }
        self
    }
}
