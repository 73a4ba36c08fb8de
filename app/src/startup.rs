//! Building and running the HTTP server with the modules this process serves.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_governor::{Governor, GovernorConfigBuilder};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{Condition, from_fn};
use actix_web::web::{self as aweb, Data};
use actix_web::{App, HttpServer};
use events::{Dispatcher, InProcess};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing_actix_web::TracingLogger;
use web::RequestIdRootSpan;

use crate::database::{self, DatabaseServer};
use crate::messaging;
use crate::modules::ModuleName;
use crate::ops::{self, Dependencies};
use crate::registry;
use crate::routes::{Wiring, api_docs, cors};
use crate::{Settings, compose, openapi};

/// How often histogram samples are folded into their buckets when no scrape
/// of `/metrics` has done it (the exporter's own default interval).
const METRICS_UPKEEP: Duration = Duration::from_secs(5);
/// How often free allocator memory goes back to the system
/// ([`crate::memory::release_free_memory`]).
const MEMORY_RELEASE: Duration = Duration::from_secs(30);
/// How often the API-wide rate limit forgets clients whose budget is whole
/// again ([`web::ratelimit::forget_idle`]).
const RATE_LIMIT_UPKEEP: Duration = Duration::from_secs(60);

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
    /// How long the background tasks get, together, to stop
    /// (`compose::background_stop`).
    background_stop: Duration,
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

/// The HTTP client for calls to other processes (modules, the gateway's
/// forwards, the payment provider, the user module's keys), over TLS when
/// their URL is `https`.
///
/// # Errors
/// An extra root certificate that cannot be loaded, or no TLS roots at all.
pub fn http_client(settings: &Settings) -> anyhow::Result<reqwest::Client> {
    let cap = compose::request_cap_ms(settings);
    if cap > settings.remote.timeout_ms {
        tracing::warn!(
            configured = settings.remote.timeout_ms,
            used = cap,
            "remote.timeout_ms is below the longest attempt a resilience policy allows; raised"
        );
    }
    Ok(compose::client_builder(settings)?.build()?)
}

impl Application {
    /// Finds the database (starting the embedded one if needed), migrates,
    /// wires the local modules and binds the listener.
    ///
    /// # Errors
    /// Key, database, migration or bind failures.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        // First: a port in use (a second `cargo run`, a pod's old process)
        // fails the start before any background task has claimed work it
        // would then leave half done. Bound, not listening: until the
        // server is wired, a connection is refused, not left waiting.
        let listener = bind(settings.server.host, settings.server.port)?;
        let (stop, stopped) = watch::channel(false);
        let stop = Arc::new(stop);
        let mut background = Vec::new();
        let budget = compose::background_stop(&settings);
        match Self::wire(
            settings,
            listener,
            Arc::clone(&stop),
            stopped,
            &mut background,
        )
        .await
        {
            Ok(application) => Ok(application),
            Err(e) => {
                // A later step failed (the broker, a key): the tasks started
                // so far finish what they hold before the error is returned.
                stop.send_replace(true);
                stop_background(background, budget).await;
                Err(e)
            }
        }
    }

    /// [`Application::build`] on `listener`, with the background tasks it
    /// starts pushed to `background` as they start.
    async fn wire(
        settings: Settings,
        listener: socket2::Socket,
        stop: Arc<watch::Sender<bool>>,
        stopped: watch::Receiver<bool>,
        background: &mut Vec<tokio::task::JoinHandle<()>>,
    ) -> anyhow::Result<Application> {
        // The OpenAPI document, the route table made from it and its JSON:
        // CPU work that needs nothing else, done beside the rest of the
        // start, which mostly waits for the database.
        let documents = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
            let doc = openapi::api_doc();
            let routes = ops::RouteTable::new(&doc);
            // Serialized once and shared by every worker: the document
            // itself is several MiB in memory, and each worker would hold a
            // copy.
            let spec = aweb::Bytes::from(serde_json::to_vec(&doc)?);
            Ok((routes, spec))
        });
        let client = http_client(&settings)?;
        let policies = compose::Policies::new(&settings);
        let mut pools = Vec::new();
        let mut subscriptions = Vec::new();
        let mut wiring = Wiring {
            local: Vec::new(),
            dispatcher: None,
            remotes: settings
                .modules
                .remote()
                .map(|(m, url)| (m, url.clone()))
                .collect(),
            unserved: ModuleName::ALL
                .iter()
                .copied()
                .filter(|m| {
                    !settings.modules.is_local(*m)
                        && !settings.modules.remote().any(|(remote, _)| remote == *m)
                })
                .collect(),
            client: client.clone(),
            policies: policies.clone(),
            trusted_proxies: settings.rate_limit.trusted_proxies.clone().into(),
            documented: Arc::from(Vec::new()),
        };
        let mut local_keys = None;
        let mut gauges = Vec::new();
        let services = Arc::new(compose::service_tokens(&settings)?);
        let database = if settings.needs_database() {
            let server = DatabaseServer::resolve(&settings).await?;
            if settings.database.migrate_on_start {
                database::migrate_local_modules(&settings, &server.url).await?;
            }
            let pool = |module: ModuleName| {
                let pool = database::module_pool(&settings, module, &server.url)?;
                pools.push((module.as_str(), pool.clone()));
                Ok(pool)
            };
            let host = host::registry::Host {
                settings: &settings,
                client: &client,
                policies: &policies,
                services: &services,
                stopped: &stopped,
                database_url: &server.url,
            };
            let built =
                host::registry::build_local(host, registry::COMPILED, pool, background).await?;
            for (registration, local) in built {
                subscriptions.extend(local.subscription);
                local_keys = local_keys.or(local.keys);
                if let Some(read) = registration.gauges {
                    gauges.push((registration.module.as_str(), read));
                }
                wiring.local.push((registration, local.data));
            }
            Some(server)
        } else {
            None
        };
        let dispatcher = Arc::new(Dispatcher::new(subscriptions, &settings.events));
        if !dispatcher.subscriptions().is_empty() {
            wiring.dispatcher = Some(Data::from(Arc::clone(&dispatcher)));
        }
        let broker = messaging::connect_broker(&settings, &services, &dispatcher, &stopped)
            .await?
            .map(|(rabbit, consumers)| {
                background.extend(consumers);
                rabbit
            });
        if let Some(server) = &database
            && settings.events.relay_enabled
        {
            let transport: Arc<dyn events::Transport> = match &broker {
                Some(rabbit) => Arc::clone(rabbit) as Arc<dyn events::Transport>,
                None => Arc::new(InProcess(Arc::clone(&dispatcher))),
            };
            let in_process = broker.is_none().then_some(dispatcher.as_ref());
            let relays = messaging::start_relays(
                &settings,
                &server.url,
                &pools,
                &transport,
                in_process,
                &stopped,
            )?;
            background.extend(relays);
        }
        let verifier = if !settings.modules.serves_any() {
            None
        } else {
            Some(Data::new(compose::verifier(
                &settings,
                local_keys,
                &services,
                client.clone(),
                &policies,
            )?))
        };
        background.push(tokio::spawn(crate::memory::release_free_memory(
            MEMORY_RELEASE,
            stopped.clone(),
        )));
        background.push(tokio::spawn(telemetry::metrics_upkeep(
            telemetry::metrics_handle(),
            METRICS_UPKEEP,
            stopped.clone(),
        )));
        let draining = Arc::new(AtomicBool::new(false));
        let deps = Data::new(Dependencies {
            draining: Arc::clone(&draining),
            pools: pools.clone(),
            remotes: wiring.remotes.clone(),
            probed: wiring.remotes.iter().map(|_| Default::default()).collect(),
            pinged: pools.iter().map(|_| Default::default()).collect(),
            scraped: Default::default(),
            table_read: Default::default(),
            broker,
            client,
            policies: policies.clone(),
            metrics: telemetry::metrics_handle(),
            gauges,
        });
        let (routes, spec) = documents.await??;
        wiring.documented = routes.templates().into();
        let routes = Data::new(routes);
        let body_limit = settings.server.body_limit_bytes;
        let body_timeout =
            web::deadline::BodyTimeout(Duration::from_millis(settings.server.body_timeout_ms));
        let swagger_ui = settings.server.swagger_ui;
        let limits = &settings.rate_limit;
        let governor = GovernorConfigBuilder::default()
            .key_extractor(web::ratelimit::PeerIp {
                trusted: Arc::new(limits.trusted_proxies.clone()),
            })
            .period(limits.refill_period())
            .burst_size(limits.burst.max(1))
            .finish()
            .ok_or_else(|| anyhow::anyhow!("rate_limit: invalid per_second or burst"))?;
        background.push(tokio::spawn(web::ratelimit::forget_idle(
            governor.limiter(),
            RATE_LIMIT_UPKEEP,
            stopped.clone(),
        )));
        let rate_limited = limits.enabled;
        let cors_enabled = !settings.cors.allowed_origins.is_empty();
        let cors_settings = settings.clone();

        listener.listen(LISTEN_BACKLOG)?;
        let listener = TcpListener::from(listener);
        let port = listener.local_addr()?.port();
        let remote_names: Vec<String> = wiring
            .remotes
            .iter()
            .map(|(m, u)| format!("{}={u}", m.as_str()))
            .collect();
        let server = HttpServer::new(move || {
            let wiring = wiring.clone();
            let mut app = App::new()
                .wrap(from_fn(auth::middleware))
                .wrap(Condition::new(cors_enabled, cors(&cors_settings)))
                .wrap(from_fn(web::etag::middleware))
                .wrap(from_fn(web::security::headers))
                .wrap(from_fn(web::observe::middleware))
                .wrap(TracingLogger::<RequestIdRootSpan>::new())
                .wrap(from_fn(web::deadline::middleware))
                .app_data(body_timeout)
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
        open_files(settings.server.connections_per_worker() * settings.server.worker_threads());
        let server = server
            .max_connections(settings.server.connections_per_worker())
            .workers(settings.server.worker_threads())
            .listen(listener)?
            .run();
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
            background: std::mem::take(background),
            background_stop: compose::background_stop(&settings),
            stop,
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
        stop_background(self.background, self.background_stop).await;
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

/// Waits for the background tasks, told to stop, to finish, all within one
/// `budget` (`compose::background_stop`): each ends the call it is in,
/// records it and returns (the saga recovery gives its steps under way one
/// step's time, then gives up its leases). Those still running then are
/// cancelled, as in a crash, and counted in the log.
async fn stop_background(tasks: Vec<JoinHandle<()>>, budget: Duration) {
    let deadline = tokio::time::Instant::now() + budget;
    let mut late = Vec::new();
    for mut task in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
            late.push(task);
        }
    }
    if !late.is_empty() {
        let count = late.len();
        // Cancelled at their next await; waited for, briefly, so that none
        // still runs when the pools close.
        for task in late {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        tracing::warn!(
            tasks = count,
            budget_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
            "background tasks did not stop in time; cancelled"
        );
    }
}

/// Connections the kernel queues for the server before it accepts them.
const LISTEN_BACKLOG: i32 = 1024;

/// File descriptors kept for everything but client connections: the
/// database pools, outgoing calls, RabbitMQ, Redis, SMTP, files.
const OTHER_FILES: u64 = 1024;

/// Raises this process's soft limit of open files to its hard limit (as
/// Go's runtime does: the soft limit is often 1,024, kept low for programs
/// using `select`, which this one does not), and warns when the limit
/// still leaves too few descriptors for `max_connections` clients and the
/// rest ([`OTHER_FILES`]): once they run out, accepts fail and so do the
/// pools' new connections.
#[allow(unsafe_code)]
fn open_files(max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, which lives here.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given, which lives here.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            limit = raised;
        }
    }
    let needed = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(OTHER_FILES);
    if limit.rlim_cur < needed {
        tracing::warn!(
            open_files = limit.rlim_cur,
            max_connections,
            "the open-file limit is below server.max_connections + {OTHER_FILES}: \
             lower server.max_connections or raise the limit (ulimit -n, LimitNOFILE)"
        );
    }
}

/// A TCP socket bound to `host:port` (address reuse on, as std's bind
/// does), not yet listening.
fn bind(host: std::net::IpAddr, port: u16) -> std::io::Result<socket2::Socket> {
    let address = std::net::SocketAddr::new(host, port);
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
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
