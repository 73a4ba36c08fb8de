//! Building and running the HTTP server with the modules this process serves.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_cors::Cors;
use actix_governor::{Governor, GovernorConfigBuilder};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{Condition, from_fn};
use actix_web::web::{self as aweb, Data};
use actix_web::{App, HttpResponse, HttpServer};
use events::rabbitmq::RabbitMq;
use events::{Dispatcher, InProcess, Relay, TransportKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing_actix_web::TracingLogger;
use url::Url;
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};
use web::RequestIdRootSpan;

use crate::database::{self, DatabaseServer};
use crate::modules::ModuleName;
use crate::ops::{self, Dependencies};
use crate::{Settings, compose, openapi};

/// A built, not yet running, shop server.
pub struct Application {
    server: Server,
    port: u16,
    /// Set on a stop signal: readiness answers 503 from then on.
    draining: Arc<AtomicBool>,
    /// How long the server serves on after a stop signal (`server.drain_delay_ms`).
    drain_delay: Duration,
    database: Option<DatabaseServer>,
    pools: Vec<db::Pool>,
    background: Vec<JoinHandle<()>>,
    stop: Arc<watch::Sender<bool>>,
}

/// Stops a running [`Application`] from outside (tests, embedding).
#[derive(Clone)]
pub struct AppHandle {
    server: ServerHandle,
    stop: Arc<watch::Sender<bool>>,
}

impl AppHandle {
    /// Stops accepting requests and tells the background tasks (relays,
    /// consumers, senders) to finish; returns without waiting.
    pub fn stop(&self) {
        self.stop.send_replace(true);
        drop(self.server.stop(true));
    }
}

/// What the route table is built from, once per worker.
#[derive(Clone)]
struct Wiring {
    #[cfg(feature = "user")]
    user: Option<(Data<user::UserModule>, Data<user::http::Limits>)>,
    #[cfg(feature = "catalog")]
    catalog: Option<Data<catalog::CatalogModule>>,
    #[cfg(feature = "notification")]
    notification: Option<Data<notification::http::NotificationModule>>,
    #[cfg(feature = "inventory")]
    inventory: Option<Data<inventory::InventoryModule>>,
    #[cfg(feature = "payment")]
    payment: Option<Data<payment::PaymentModule>>,
    #[cfg(feature = "order")]
    order: Option<Data<order::OrderModule>>,
    /// Serves the dead-letter routes when a local module handles events.
    dispatcher: Option<Data<Dispatcher>>,
    remotes: Vec<(ModuleName, Url)>,
    /// Modules neither local nor forwarded: their routes answer 503.
    unserved: Vec<ModuleName>,
    client: reqwest::Client,
    policies: compose::Policies,
}

impl Wiring {
    fn configure(&self, cfg: &mut aweb::ServiceConfig) {
        #[cfg(feature = "user")]
        if let Some((users, limits)) = &self.user {
            cfg.app_data(users.clone()).app_data(limits.clone());
            user::http::configure(&mut utoipa_actix_web::service_config::ServiceConfig::new(
                cfg,
            ));
        }
        #[cfg(feature = "catalog")]
        if let Some(catalog) = &self.catalog {
            cfg.app_data(catalog.clone());
            catalog::http::configure(&mut utoipa_actix_web::service_config::ServiceConfig::new(
                cfg,
            ));
        }
        #[cfg(feature = "notification")]
        if let Some(notifications) = &self.notification {
            cfg.app_data(notifications.clone());
            notification::http::configure(
                &mut utoipa_actix_web::service_config::ServiceConfig::new(cfg),
            );
        }
        #[cfg(feature = "inventory")]
        if let Some(inventory) = &self.inventory {
            cfg.app_data(inventory.clone());
            inventory::http::configure(&mut utoipa_actix_web::service_config::ServiceConfig::new(
                cfg,
            ));
        }
        #[cfg(feature = "payment")]
        if let Some(payments) = &self.payment {
            cfg.app_data(payments.clone());
            payment::http::configure(&mut utoipa_actix_web::service_config::ServiceConfig::new(
                cfg,
            ));
        }
        #[cfg(feature = "order")]
        if let Some(orders) = &self.order {
            cfg.app_data(orders.clone());
            order::http::configure(&mut utoipa_actix_web::service_config::ServiceConfig::new(
                cfg,
            ));
        }
        if let Some(dispatcher) = &self.dispatcher {
            cfg.app_data(dispatcher.clone());
            events::http::configure(&mut utoipa_actix_web::service_config::ServiceConfig::new(
                cfg,
            ));
        }
        for module in &self.unserved {
            crate::gateway::configure_unserved(cfg, module.as_str(), module.route_prefixes());
        }
        for (module, url) in &self.remotes {
            let mut prefixes = module.route_prefixes().to_vec();
            // The dead letters live with the module that handles events.
            if *module == ModuleName::Notification && self.dispatcher.is_none() {
                prefixes.push(events::http::ROUTE_PREFIX);
            }
            crate::gateway::configure(
                cfg,
                module.as_str(),
                &prefixes,
                url.clone(),
                self.client.clone(),
                self.policies.get(module.as_str()),
            );
        }
    }
}

/// A client builder with TLS set up: rustls (ring), the platform's roots
/// and `remote.extra_root_certificates`.
///
/// # Errors
/// An extra root certificate file that cannot be read or parsed, named.
fn client_builder(settings: &Settings) -> anyhow::Result<reqwest::ClientBuilder> {
    remote::tls::install_crypto_provider();
    let roots = remote::tls::extra_roots(&settings.remote.extra_root_certificates)
        .map_err(|e| anyhow::anyhow!("remote.extra_root_certificates: {e}"))?;
    Ok(reqwest::Client::builder().tls_certs_merge(roots))
}

/// The HTTP client for calls to other processes (modules, the gateway's
/// forwards, the payment provider, the user module's keys), over TLS when
/// their URL is `https`.
///
/// # Errors
/// An extra root certificate that cannot be loaded, or no TLS roots at all.
pub fn http_client(settings: &Settings) -> anyhow::Result<reqwest::Client> {
    Ok(client_builder(settings)?
        .timeout(Duration::from_millis(settings.remote.timeout_ms))
        .connect_timeout(Duration::from_millis(settings.remote.timeout_ms.min(5000)))
        .build()?)
}

/// The HTTP client of webhook calls: it reaches public addresses only (its
/// resolver refuses internal ones, `notification::egress`), follows no
/// redirect and uses no proxy.
///
/// # Errors
/// When the client cannot be built (not expected).
#[cfg(feature = "notification")]
fn webhook_client(
    settings: &Settings,
    egress: &notification::egress::Egress,
) -> anyhow::Result<reqwest::Client> {
    Ok(client_builder(settings)?
        .dns_resolver(Arc::new(egress.clone()).resolver())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
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
        .expose_headers([
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

impl Application {
    /// Finds the database (starting the embedded one if needed), migrates,
    /// wires the local modules and binds the listener.
    ///
    /// # Errors
    /// Key, database, migration or bind failures.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let client = http_client(&settings)?;
        let policies = compose::Policies::new(&settings);
        let mut pools = Vec::new();
        let (stop, stopped) = watch::channel(false);
        let mut background = Vec::new();
        #[cfg_attr(
            not(any(feature = "catalog", feature = "notification")),
            allow(unused_mut)
        )]
        let mut subscriptions = Vec::new();
        let mut wiring = Wiring {
            #[cfg(feature = "user")]
            user: None,
            #[cfg(feature = "catalog")]
            catalog: None,
            #[cfg(feature = "notification")]
            notification: None,
            #[cfg(feature = "inventory")]
            inventory: None,
            #[cfg(feature = "payment")]
            payment: None,
            #[cfg(feature = "order")]
            order: None,
            dispatcher: None,
            remotes: settings
                .modules
                .remote()
                .map(|(m, url)| (m, url.clone()))
                .collect(),
            unserved: ModuleName::ALL
                .iter()
                .copied()
                .filter(|m| !settings.modules.enabled.contains(m))
                .collect(),
            client: client.clone(),
            policies: policies.clone(),
        };
        #[cfg_attr(not(feature = "user"), allow(unused_mut))]
        let mut local_keys = None;
        let services = Arc::new(compose::service_tokens(&settings)?);
        let database = if settings.needs_database() {
            let server = DatabaseServer::resolve(&settings).await?;
            if settings.database.migrate_on_start {
                database::migrate_local_modules(&settings, &server.url).await?;
            }
            // A binary without modules never gets here (no local module).
            #[cfg_attr(
                not(any(
                    feature = "user",
                    feature = "catalog",
                    feature = "inventory",
                    feature = "order",
                    feature = "payment",
                    feature = "notification"
                )),
                allow(clippy::never_loop)
            )]
            for module in settings.modules.local() {
                let pool = database::module_pool(&settings, module, &server.url)?;
                pools.push((module.as_str(), pool.clone()));
                match module {
                    #[cfg(feature = "user")]
                    ModuleName::User => {
                        let key = compose::signing_key(&settings)?;
                        local_keys = Some(compose::key_set(&settings, &key)?);
                        let users = compose::user_module(&settings, pool, key)?;
                        let retention = user::RetentionJob::new(
                            users.clone(),
                            Duration::from_secs(settings.user.prune_interval_secs),
                        );
                        background.push(tokio::spawn(retention.run(stopped.clone())));
                        let limits = &settings.rate_limit;
                        let limits = user::http::Limits::new(
                            limits.trusted_proxies.clone(),
                            limits.per_minute(limits.login_per_minute_per_ip),
                            limits.per_minute(limits.login_per_minute_per_account),
                            limits.per_minute(limits.registrations_per_minute_per_ip),
                        );
                        wiring.user = Some((Data::new(users), Data::new(limits)));
                    }
                    #[cfg(feature = "catalog")]
                    ModuleName::Catalog => {
                        let cache = catalog::ProductCache::new(&settings.catalog.cache)
                            .await
                            .map_err(|e| anyhow::anyhow!("catalog.cache: {e}"))?;
                        subscriptions.push(events::Subscription {
                            module: catalog::NAME,
                            name: catalog::events::HANDLER,
                            event_types: catalog::events::EVENT_TYPES.to_vec(),
                            handler: Arc::new(catalog::CatalogEvents::new(cache.clone())),
                            pool: pool.clone(),
                        });
                        wiring.catalog = Some(Data::new(catalog::CatalogModule::new(pool, cache)));
                    }
                    #[cfg(feature = "inventory")]
                    ModuleName::Inventory => {
                        let module =
                            inventory::InventoryModule::new(pool, settings.inventory.clone());
                        let job = inventory::ExpiryJob::new(module.clone());
                        background.push(tokio::spawn(job.run(stopped.clone())));
                        wiring.inventory = Some(Data::new(module));
                    }
                    #[cfg(feature = "payment")]
                    ModuleName::Payment => {
                        let provider_url = match &settings.payment.provider_url {
                            Some(url) => url.clone(),
                            #[cfg(feature = "sandbox")]
                            None if settings.payment.sandbox_embedded => {
                                let (server, port) = payment_sandbox::server("127.0.0.1", 0, 1)?;
                                tracing::info!(
                                    port,
                                    "started the SANDBOX payment provider in this process (payment.provider_url is unset); it moves no money"
                                );
                                let handle = server.handle();
                                tokio::spawn(server);
                                let mut stop = stopped.clone();
                                background.push(tokio::spawn(async move {
                                    let _ = stop.changed().await;
                                    handle.stop(true).await;
                                }));
                                Url::parse(&format!("http://127.0.0.1:{port}/"))?
                            }
                            None => anyhow::bail!(
                                "payment.provider_url: required (payment.sandbox_embedded is off, \
                                 or this binary lacks the sandbox: cargo feature \"sandbox\")"
                            ),
                        };
                        let provider = payment::provider::HttpProvider::new(
                            client.clone(),
                            provider_url,
                            policies.get("payment_provider"),
                        );
                        wiring.payment = Some(Data::new(payment::PaymentModule::new(
                            pool,
                            Arc::new(provider),
                        )));
                    }
                    #[cfg(feature = "order")]
                    ModuleName::Order => {
                        // This process's own modules, when they run here.
                        #[cfg(feature = "catalog")]
                        let local_catalog = wiring
                            .catalog
                            .clone()
                            .map(|m| m.into_inner() as Arc<dyn catalog_api::CatalogApi>);
                        #[cfg(not(feature = "catalog"))]
                        let local_catalog = None;
                        #[cfg(feature = "inventory")]
                        let local_inventory = wiring
                            .inventory
                            .clone()
                            .map(|m| m.into_inner() as Arc<dyn inventory_api::InventoryApi>);
                        #[cfg(not(feature = "inventory"))]
                        let local_inventory = None;
                        #[cfg(feature = "payment")]
                        let local_payment = wiring
                            .payment
                            .clone()
                            .map(|m| m.into_inner() as Arc<dyn payment_api::PaymentApi>);
                        #[cfg(not(feature = "payment"))]
                        let local_payment = None;
                        let deps = order::Dependencies {
                            catalog: compose::module_api(
                                &settings,
                                ModuleName::Catalog,
                                local_catalog.clone(),
                                |base| {
                                    Arc::new(catalog_api::client::CatalogClient::new(
                                        client.clone(),
                                        base,
                                        policies.get("catalog"),
                                    ))
                                },
                                |api| Arc::new(catalog_api::observed::Observed(api)),
                            )?,
                            inventory: compose::module_api(
                                &settings,
                                ModuleName::Inventory,
                                local_inventory.clone(),
                                |base| {
                                    Arc::new(inventory_api::client::InventoryClient::new(
                                        client.clone(),
                                        base,
                                        policies.get("inventory"),
                                    ))
                                },
                                |api| Arc::new(inventory_api::observed::Observed(api)),
                            )?,
                            payment: compose::module_api(
                                &settings,
                                ModuleName::Payment,
                                local_payment.clone(),
                                |base| {
                                    Arc::new(payment_api::client::PaymentClient::new(
                                        client.clone(),
                                        base,
                                        policies.get("payment"),
                                    ))
                                },
                                |api| Arc::new(payment_api::observed::Observed(api)),
                            )?,
                            services: Arc::clone(&services),
                        };
                        let module = order::OrderModule::new(pool, deps, settings.order.clone());
                        let worker = order::RecoveryWorker::new(module.clone());
                        background.push(tokio::spawn(worker.run(stopped.clone())));
                        wiring.order = Some(Data::new(module));
                    }
                    #[cfg(feature = "notification")]
                    ModuleName::Notification => {
                        let config = &settings.notification;
                        subscriptions.push(events::Subscription {
                            module: notification::NAME,
                            name: notification::HANDLER,
                            event_types: notification::EVENT_TYPES.to_vec(),
                            handler: Arc::new(notification::NotificationHandler::new(
                                config.admin_email.clone(),
                            )),
                            pool: pool.clone(),
                        });
                        let egress =
                            notification::egress::Egress::new(config.webhook_allow.clone());
                        let sender = notification::Sender::new(
                            pool.clone(),
                            config.clone(),
                            webhook_client(&settings, &egress)?,
                            policies.get("smtp"),
                            policies.get("webhooks"),
                        )?;
                        background.push(tokio::spawn(sender.run(stopped.clone())));
                        wiring.notification = Some(Data::new(
                            notification::http::NotificationModule::new(pool, egress),
                        ));
                    }
                    // Settings refuse to serve a module this binary lacks.
                    #[allow(unreachable_patterns)]
                    other => anyhow::bail!("the {} module is not compiled in", other.as_str()),
                }
            }
            Some(server)
        } else {
            None
        };
        let dispatcher = Arc::new(Dispatcher::new(subscriptions, &settings.events));
        if !dispatcher.subscriptions().is_empty() {
            wiring.dispatcher = Some(Data::from(Arc::clone(&dispatcher)));
        }
        let broker = match settings.events.transport {
            TransportKind::InProcess => None,
            TransportKind::RabbitMq => {
                let seal = auth::EventSeal::new(services.key())
                    .map_err(|e| anyhow::anyhow!("auth.service_key_file: {e}"))?;
                let rabbit = RabbitMq::connect(settings.events.rabbitmq.clone(), seal)
                    .await
                    .map_err(|e| anyhow::anyhow!("events.rabbitmq: {e}"))?;
                // Every subscriber's queue, not only this process's: an event
                // published before its subscriber's process first starts
                // waits in the queue instead of being dropped unrouted.
                for module in ModuleName::ALL {
                    let types = module.subscribes();
                    if types.is_empty() {
                        continue;
                    }
                    rabbit
                        .declare_queue(module.as_str(), types)
                        .await
                        .map_err(|e| anyhow::anyhow!("events.rabbitmq: {e}"))?;
                }
                let mut modules: Vec<&'static str> = dispatcher
                    .subscriptions()
                    .iter()
                    .map(|s| s.module)
                    .collect();
                modules.dedup();
                for module in modules {
                    let types: Vec<&'static str> = dispatcher
                        .subscriptions()
                        .iter()
                        .filter(|s| s.module == module)
                        .flat_map(|s| s.event_types.iter().copied())
                        .collect();
                    background.push(tokio::spawn(Arc::clone(&rabbit).consume(
                        module,
                        types,
                        Arc::clone(&dispatcher),
                        stopped.clone(),
                    )));
                }
                Some(rabbit)
            }
        };
        if let Some(server) = &database
            && settings.events.relay_enabled
        {
            let transport: Arc<dyn events::Transport> = match &broker {
                Some(rabbit) => Arc::clone(rabbit) as Arc<dyn events::Transport>,
                None => Arc::new(InProcess(Arc::clone(&dispatcher))),
            };
            for module in settings.modules.local() {
                let pool = pools
                    .iter()
                    .find(|(name, _)| *name == module.as_str())
                    .map(|(_, pool)| pool.clone())
                    .ok_or_else(|| anyhow::anyhow!("no pool for {}", module.as_str()))?;
                let schema = database::migrations(module)
                    .ok_or_else(|| anyhow::anyhow!("no {} module here", module.as_str()))?
                    .schema;
                let relay = Relay::new(
                    module.as_str(),
                    schema,
                    pool,
                    settings.module_database_url(module, &server.url).to_owned(),
                    Arc::clone(&transport),
                    &settings.events,
                );
                background.push(tokio::spawn(relay.run(stopped.clone())));
            }
        }
        let verifier = if settings.modules.enabled.is_empty() {
            None
        } else {
            Some(Data::new(compose::verifier(
                &settings,
                local_keys,
                services.key(),
                client.clone(),
                &policies,
            )?))
        };
        let draining = Arc::new(AtomicBool::new(false));
        let deps = Data::new(Dependencies {
            draining: Arc::clone(&draining),
            pools: pools.clone(),
            remotes: wiring
                .remotes
                .iter()
                .map(|(m, u)| (m.as_str(), u.clone()))
                .collect(),
            broker,
            client,
            policies: policies.clone(),
            metrics: telemetry::metrics_handle(),
            gauges: module_gauges(),
        });
        let doc = openapi::api_doc();
        let routes = Data::new(ops::RouteTable::new(&doc));
        // Serialized once and shared by every worker: the document itself
        // is several MiB in memory, and each worker would hold a copy.
        let spec = aweb::Bytes::from(serde_json::to_vec(&doc)?);
        drop(doc);
        let body_limit = settings.server.body_limit_bytes;
        let swagger_ui = settings.server.swagger_ui;
        let limits = &settings.rate_limit;
        let governor = GovernorConfigBuilder::default()
            .key_extractor(web::ratelimit::PeerIp {
                trusted: Arc::new(limits.trusted_proxies.clone()),
            })
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
                .wrap(from_fn(web::etag::middleware))
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
                    .wrap(from_fn(web::text::refuse_nul))
                    .wrap(Condition::new(rate_limited, Governor::new(&governor)))
                    .configure(move |cfg| wiring.configure(cfg)),
            )
            .route("/health/live", aweb::get().to(ops::live))
            .route("/health/ready", aweb::get().to(ops::ready))
            .route("/metrics", aweb::get().to(ops::metrics))
            .configure(|cfg| api_docs(cfg, swagger_ui, spec.clone()))
            .app_data(routes.clone())
            .default_service(aweb::to(ops::unrouted))
        })
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        // Stop signals are ours: readiness turns 503 and the server drains
        // first (run_until_stopped).
        .disable_signals();
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
            draining,
            drain_delay: Duration::from_millis(settings.server.drain_delay_ms),
            database,
            pools: pools.into_iter().map(|(_, p)| p).collect(),
            background,
            stop: Arc::new(stop),
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server and its background tasks.
    pub fn handle(&self) -> AppHandle {
        AppHandle {
            server: self.server.handle(),
            stop: Arc::clone(&self.stop),
        }
    }

    /// Serves until SIGTERM/SIGINT (or [`ServerHandle::stop`]): then stops
    /// accepting, lets in-flight requests finish, closes the pools and stops
    /// the embedded database if this process started it.
    ///
    /// # Errors
    /// Server I/O failures.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let (draining, delay) = (Arc::clone(&self.draining), self.drain_delay);
        let signals = tokio::spawn(async move {
            stop_signal().await;
            // Out of rotation first, then stop accepting: a load balancer
            // that checks readiness sends nothing new once it has seen 503.
            draining.store(true, Ordering::Relaxed);
            tracing::info!(
                drain_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "stop signal: readiness answers 503; serving on while the load balancer lets go"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop_signal() => tracing::info!("second stop signal: stopping now"),
            }
            handle.stop(true).await;
        });
        let result = self.server.await;
        signals.abort();
        tracing::info!("server stopped; stopping relays and workers");
        self.stop.send_replace(true);
        for task in self.background {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("a background task did not stop in time");
            }
        }
        tracing::info!("closing pools");
        for pool in &self.pools {
            pool.close();
        }
        if let Some(database) = self.database {
            database.shutdown().await;
        }
        Ok(result?)
    }
}

/// The gauges modules read from their own tables when `/metrics` is scraped
/// (read only for the modules served here).
fn module_gauges() -> Vec<(&'static str, crate::ops::ModuleGauges)> {
    vec![
        #[cfg(feature = "order")]
        (order::NAME, |pool| Box::pin(order::record_metrics(pool))),
    ]
}

/// The spec at `/api-docs/openapi.json` (`spec`, serialized once), and
/// Swagger UI at `/swagger-ui/` reading it when `swagger_ui`
/// (`server.swagger_ui`).
fn api_docs(cfg: &mut aweb::ServiceConfig, swagger_ui: bool, spec: aweb::Bytes) {
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

/// Waits for SIGTERM (containers, Kubernetes) or SIGINT (a terminal).
async fn stop_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; SIGINT only");
                drop(tokio::signal::ctrl_c().await);
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
