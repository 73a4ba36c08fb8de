//! Building and running the HTTP server with the modules this process serves.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::web::{self as aweb, Data};
use actix_web::{App, HttpServer};
use tracing_actix_web::TracingLogger;
use url::Url;
use utoipa_swagger_ui::SwaggerUi;
use web::RequestIdRootSpan;

use crate::database::{self, DatabaseServer};
use crate::modules::ModuleName;
use crate::ops::{self, Dependencies};
use crate::{Settings, openapi};

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
    catalog: Option<Data<catalog::CatalogModule>>,
    remotes: Vec<(ModuleName, Url)>,
    client: reqwest::Client,
}

impl Wiring {
    fn configure(&self, cfg: &mut aweb::ServiceConfig) {
        if let Some(catalog) = &self.catalog {
            cfg.app_data(catalog.clone());
            catalog::http::configure(&mut utoipa_actix_web::service_config::ServiceConfig::new(
                cfg,
            ));
        }
        for (module, url) in &self.remotes {
            let prefixes = match module {
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

impl Application {
    /// Finds the database (starting the embedded one if needed), migrates,
    /// builds the pools and binds the listener.
    ///
    /// # Errors
    /// Database, migration or bind failures.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let client = http_client(&settings)?;
        let mut pools = Vec::new();
        let mut catalog = None;
        let database = if settings.needs_database() {
            let server = DatabaseServer::resolve(&settings).await?;
            if settings.database.migrate_on_start {
                database::migrate_local_modules(&settings, &server.url).await?;
            }
            for module in settings.modules.local() {
                let pool = database::module_pool(&settings, module, &server.url)?;
                pools.push((module.as_str(), pool.clone()));
                match module {
                    ModuleName::Catalog => {
                        catalog = Some(Data::new(catalog::CatalogModule::new(pool)));
                    }
                }
            }
            Some(server)
        } else {
            None
        };
        let remotes: Vec<(ModuleName, Url)> = settings
            .modules
            .remote()
            .map(|(m, url)| (m, url.clone()))
            .collect();
        let wiring = Wiring {
            catalog,
            remotes: remotes.clone(),
            client: client.clone(),
        };
        let deps = Data::new(Dependencies {
            pools: pools.clone(),
            remotes: remotes
                .iter()
                .map(|(m, u)| (m.as_str(), u.clone()))
                .collect(),
            client,
            metrics: telemetry::metrics_handle(),
        });
        let doc = openapi::api_doc();
        let body_limit = settings.server.body_limit_bytes;

        let listener = TcpListener::bind((settings.server.host, settings.server.port))?;
        let port = listener.local_addr()?.port();
        let mut server = HttpServer::new(move || {
            let wiring = wiring.clone();
            App::new()
                .wrap(from_fn(web::observe::middleware))
                .wrap(TracingLogger::<RequestIdRootSpan>::new())
                .app_data(web::problem::json_config(body_limit))
                .app_data(web::problem::payload_config(body_limit))
                .app_data(web::problem::path_config())
                .app_data(web::problem::query_config())
                .app_data(deps.clone())
                .service(aweb::scope("/api/v1").configure(move |cfg| wiring.configure(cfg)))
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
            remote = ?remotes.iter().map(|(m, u)| format!("{}={u}", m.as_str())).collect::<Vec<_>>(),
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
