//! The route table each HTTP worker builds: the local modules' routes with
//! what they read, the dead-letter routes (this process's own and those of
//! the processes it forwards to), forwards to remote modules, 503
//! for modules served nowhere; CORS; the spec and Swagger UI.

use actix_cors::Cors;
use actix_web::HttpResponse;
use actix_web::web::{self as aweb, Data};
use std::sync::Arc;

use events::Dispatcher;
use events::http::Elsewhere;
use url::Url;
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use crate::Settings;
use crate::compose::{self, Dependency};
use crate::dead_letters::Processes;
use crate::modules::ModuleName;
use host::registry::{AppData, Registration};

/// What the route table is built from, once per worker.
#[derive(Clone)]
pub(crate) struct Wiring {
    /// The modules served here, with what their routes read.
    pub(crate) local: Vec<(&'static Registration, AppData)>,
    /// Serves the dead letters of the local modules that handle events.
    pub(crate) dispatcher: Option<Data<Dispatcher>>,
    pub(crate) remotes: Vec<(ModuleName, Url)>,
    /// Modules neither local nor forwarded: their routes answer 503.
    pub(crate) unserved: Vec<ModuleName>,
    pub(crate) client: reqwest::Client,
    pub(crate) policies: compose::Policies,
    /// `rate_limit.trusted_proxies`: forwards name the client behind them.
    pub(crate) trusted_proxies: Arc<[web::ratelimit::TrustedProxy]>,
    /// The API's documented path templates (`/api/v1/products/{id}`): a
    /// forward is routed by its module's, so that its metrics and spans
    /// name the template, as the module's own do.
    pub(crate) documented: Arc<[String]>,
}

impl Wiring {
    pub(crate) fn configure(&self, cfg: &mut aweb::ServiceConfig) {
        for (registration, data) in &self.local {
            data(cfg);
            (registration.routes)(&mut web::Routes::Serve(cfg));
        }
        // Dead letters: this process's own, and those of the processes
        // serving its remote event-handling modules.
        let elsewhere = Processes::new(&self.remotes, &self.client, &self.policies);
        if self.dispatcher.is_some() || elsewhere.is_some() {
            if let Some(dispatcher) = &self.dispatcher {
                cfg.app_data(dispatcher.clone());
            }
            if let Some(elsewhere) = elsewhere {
                let elsewhere: Arc<dyn Elsewhere> = Arc::new(elsewhere);
                cfg.app_data(Data::from(elsewhere));
            }
            events::http::configure(&mut web::Routes::Serve(cfg));
        }
        for module in &self.unserved {
            crate::gateway::configure_unserved(cfg, module.as_str(), module.route_prefixes());
        }
        for (module, url) in &self.remotes {
            let mut templates: Vec<&str> = self
                .documented
                .iter()
                .filter_map(|path| path.strip_prefix("/api/v1"))
                .filter(|path| {
                    module.route_prefixes().iter().any(|prefix| {
                        path.strip_prefix(prefix)
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                    })
                })
                .collect();
            // Segment by segment, a literal before a `{parameter}`, so that
            // `/inventory/reservations` is not taken by `/inventory/{sku}`.
            templates.sort_by_cached_key(|path| {
                path.split('/')
                    .map(|segment| (segment.starts_with('{'), segment.to_owned()))
                    .collect::<Vec<_>>()
            });
            let upstream = crate::gateway::Upstream {
                module: module.as_str(),
                base: url.clone(),
                client: self.client.clone(),
                policy: self.policies.get(Dependency::Module(*module)),
                trusted: Arc::clone(&self.trusted_proxies),
            };
            crate::gateway::configure(cfg, upstream, &templates, module.route_prefixes());
        }
    }
}

/// CORS for the origins `cors.allowed_origins` lists.
pub(crate) fn cors(settings: &Settings) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        // The conditional requests the API documents (`If-Match` on a
        // cart or product, `If-None-Match` on reads) and their `ETag`.
        .allowed_headers([
            "authorization",
            "content-type",
            "idempotency-key",
            "if-match",
            "if-none-match",
            "x-request-id",
        ])
        .expose_headers([
            "etag",
            "location",
            "x-request-id",
            "retry-after",
            "idempotent-replayed",
        ])
        .max_age(600)
        // Requests from other origins get no CORS headers (the browser
        // blocks them) rather than an error, so same-origin use is untouched.
        .block_on_origin_mismatch(false);
    for origin in &settings.cors.allowed_origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// The spec at `/api-docs/openapi.json` (`spec`, serialized once), and
/// Swagger UI at `/swagger-ui/` reading it when `swagger_ui`
/// (`server.swagger_ui`).
pub(crate) fn api_docs(cfg: &mut aweb::ServiceConfig, swagger_ui: bool, spec: aweb::Bytes) {
    cfg.route(
        "/api-docs/openapi.json",
        aweb::get().to(move || {
            let spec = spec.clone();
            async move {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(spec)
            }
        }),
    );
    if swagger_ui {
        cfg.service(aweb::redirect("/swagger-ui", "/swagger-ui/"))
            .service(
                SwaggerUi::new("/swagger-ui/{_:.*}")
                    .config(SwaggerConfig::new(["/api-docs/openapi.json"])),
            );
    }
}
