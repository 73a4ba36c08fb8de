//! Building and running the HTTP server with the modules this process serves.

use std::net::TcpListener;
use std::time::Duration;

use actix_cors::Cors;
use actix_governor::{Governor, GovernorConfigBuilder};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{Condition, from_fn};
use actix_web::web::{self as aweb, Data};
use actix_web::{App, HttpServer};
use tracing_actix_web::TracingLogger;
use url::Url;
use utoipa_swagger_ui::SwaggerUi;
use web::RequestIdRootSpan;

use crate::database::{self, DatabaseServer};
use crate::modules::ModuleName;
use crate::ops::{self, Dependencies};
use crate::{Settings, compose, openapi};

/// A built, not yet running, shop server.
pub struct Application {
    server: Server,
    port: u16,
    database: Option<DatabaseServer>,
    pools: Vec<db::Pool>,
}

/// What the route table is built from, once per worker.
#[derive(Clone)]
struct Wiring {
    user: Option<(Data<user::UserModule>, Data<user::http::Limits>)>,
    catalog: Option<Data<catalog::CatalogModule>>,
    remotes: Vec<(ModuleName, Url)>,
    client: reqwest::Client,
}

impl Wiring {
    fn configure(&self, cfg: &mut aweb::ServiceConfig) {
        if let Some((users, limits)) = &self.user {
            cfg.app_data(users.clone()).app_data(limits.clone());
            user::http::configure(&mut utoipa_actix_web::service_config::ServiceConfig::new(
                cfg,
            ));
        }
        if let Some(catalog) = &self.catalog {
            cfg.app_data(catalog.clone());
            catalog::http::configure(&mut utoipa_actix_web::service_config::ServiceConfig::new(
                cfg,
            ));
        }
        for (module, url) in &self.remotes {
            let prefixes = match module {
                ModuleName::User => user_api::ROUTE_PREFIXES,
                ModuleName::Catalog => catalog_api::ROUTE_PREFIXES,
            };
            crate::gateway::configure(
                cfg,
                module.as_str(),
                prefixes,
                url.clone(),
                self.client.clone(),
            );
        }
    }
}

/// The HTTP client for calls to other processes.
///
/// # Errors
/// When the TLS-less client cannot be built (not expected).
pub fn http_client(settings: &Settings) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_millis(settings.remote.timeout_ms))
        .connect_timeout(Duration::from_millis(settings.remote.timeout_ms.min(5000)))
        .build()?)
}

fn cors(settings: &Settings) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            "authorization",
            "content-type",
            "idempotency-key",
            "x-request-id",
        ])
        .expose_headers(["location", "x-request-id", "retry-after"])
        .max_age(600)
        // Requests from other origins get no CORS headers (the browser
        // blocks them) rather than an error, so same-origin use is untouched.
        .block_on_origin_mismatch(false);
    for origin in &settings.cors.allowed_origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

impl Application {
    /// Finds the database (starting the embedded one if needed), migrates,
    /// wires the local modules and binds the listener.
    ///
    /// # Errors
    /// Key, database, migration or bind failures.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let client = http_client(&settings)?;
        let mut pools = Vec::new();
        let mut wiring = Wiring {
            user: None,
            catalog: None,
            remotes: settings
                .modules
                .remote()
                .map(|(m, url)| (m, url.clone()))
                .collect(),
            client: client.clone(),
        };
        let mut local_keys = None;
        let database = if settings.needs_database() {
            let server = DatabaseServer::resolve(&settings).await?;
            if settings.database.migrate_on_start {
                database::migrate_local_modules(&settings, &server.url).await?;
            }
            for module in settings.modules.local() {
                let pool = database::module_pool(&settings, module, &server.url)?;
                pools.push((module.as_str(), pool.clone()));
                match module {
                    ModuleName::User => {
                        let key = compose::signing_key(&settings)?;
                        local_keys = Some(compose::key_set(&settings, &key)?);
                        let users = compose::user_module(&settings, pool, key)?;
                        let limits = &settings.rate_limit;
                        let limits = user::http::Limits::new(
                            limits.per_minute(limits.login_per_minute_per_ip),
                            limits.per_minute(limits.login_per_minute_per_account),
                            limits.per_minute(limits.registrations_per_minute_per_ip),
                        );
                        wiring.user = Some((Data::new(users), Data::new(limits)));
                    }
                    ModuleName::Catalog => {
                        wiring.catalog = Some(Data::new(catalog::CatalogModule::new(pool)));
                    }
                }
            }
            Some(server)
        } else {
            None
        };
        let verifier = if settings.modules.enabled.is_empty() {
            None
        } else {
            Some(Data::new(compose::verifier(
                &settings,
                local_keys,
                client.clone(),
            )?))
        };
        let deps = Data::new(Dependencies {
            pools: pools.clone(),
            remotes: wiring
                .remotes
                .iter()
                .map(|(m, u)| (m.as_str(), u.clone()))
                .collect(),
            client,
            metrics: telemetry::metrics_handle(),
        });
        let doc = openapi::api_doc();
        let body_limit = settings.server.body_limit_bytes;
        let limits = &settings.rate_limit;
        let governor = GovernorConfigBuilder::default()
            .key_extractor(web::ratelimit::PeerIp)
            .requests_per_second(u64::from(limits.per_second.max(1)))
            .burst_size(limits.burst.max(1))
            .finish()
            .ok_or_else(|| anyhow::anyhow!("rate_limit: invalid per_second or burst"))?;
        let rate_limited = limits.enabled;
        let cors_enabled = !settings.cors.allowed_origins.is_empty();
        let cors_settings = settings.clone();

        let listener = TcpListener::bind((settings.server.host, settings.server.port))?;
        let port = listener.local_addr()?.port();
        let remote_names: Vec<String> = wiring
            .remotes
            .iter()
            .map(|(m, u)| format!("{}={u}", m.as_str()))
            .collect();
        let mut server = HttpServer::new(move || {
            let wiring = wiring.clone();
            let mut app = App::new()
                .wrap(from_fn(auth::middleware))
                .wrap(Condition::new(cors_enabled, cors(&cors_settings)))
                .wrap(from_fn(web::security::headers))
                .wrap(from_fn(web::observe::middleware))
                .wrap(TracingLogger::<RequestIdRootSpan>::new())
                .app_data(web::problem::json_config(body_limit))
                .app_data(web::problem::payload_config(body_limit))
                .app_data(web::problem::path_config())
                .app_data(web::problem::query_config())
                .app_data(deps.clone());
            if let Some(verifier) = &verifier {
                app = app.app_data(verifier.clone()).service(auth::jwks);
            }
            app.service(
                aweb::scope("/api/v1")
                    .wrap(Condition::new(rate_limited, Governor::new(&governor)))
                    .configure(move |cfg| wiring.configure(cfg)),
            )
            .route("/health/live", aweb::get().to(ops::live))
            .route("/health/ready", aweb::get().to(ops::ready))
            .route("/metrics", aweb::get().to(ops::metrics))
            .service(aweb::redirect("/swagger-ui", "/swagger-ui/"))
            .service(
                SwaggerUi::new("/swagger-ui/{_:.*}").url("/api-docs/openapi.json", doc.clone()),
            )
            .default_service(aweb::to(web::problem::not_found))
        })
        .shutdown_timeout(settings.server.shutdown_timeout_secs);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server.listen(listener)?.run();
        tracing::info!(
            port,
            local = ?settings.modules.local().map(ModuleName::as_str).collect::<Vec<_>>(),
            remote = ?remote_names,
            "shop listening"
        );
        Ok(Application {
            server,
            port,
            database,
            pools: pools.into_iter().map(|(_, p)| p).collect(),
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server (tests).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (or [`ServerHandle::stop`]): then stops
    /// accepting, lets in-flight requests finish, closes the pools and stops
    /// the embedded database if this process started it.
    ///
    /// # Errors
    /// Server I/O failures.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        tracing::info!("server stopped; closing pools");
        for pool in &self.pools {
            pool.close();
        }
        if let Some(database) = self.database {
            database.shutdown().await;
        }
        Ok(result?)
    }
}
