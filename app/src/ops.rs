//! Operations endpoints: liveness, readiness, Prometheus metrics.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Map, Value, json};
use url::Url;

use crate::compose::Dependency;
use crate::modules::ModuleName;
use host::registry::ModuleGauges;

/// What readiness checks and metrics report on.
pub(crate) struct Dependencies {
    /// Set once a stop signal arrived: readiness answers 503 at once.
    pub(crate) draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Pools of local modules, by module name.
    pub(crate) pools: Vec<(&'static str, db::Pool)>,
    /// The last readiness ping of each pool (same order), reused for
    /// [`PROBE_REUSE`]; its lock makes one ping at a time per pool.
    pub(crate) pinged: Vec<LastProbe>,
    /// Remote modules this process forwards to, by module name.
    pub(crate) remotes: Vec<(ModuleName, Url)>,
    /// The last probe of each remote (same order), reused for
    /// [`PROBE_REUSE`]; its lock makes one probe at a time per module.
    pub(crate) probed: Vec<LastProbe>,
    /// Their resilience policies (an open breaker makes the process not ready).
    pub(crate) policies: crate::compose::Policies,
    /// The broker, when events travel through RabbitMQ.
    pub(crate) broker: Option<std::sync::Arc<events::rabbitmq::RabbitMq>>,
    pub(crate) client: reqwest::Client,
    pub(crate) metrics: PrometheusHandle,
    /// Gauges a local module reads from its own tables (the order module's
    /// sagas), by module name.
    pub(crate) gauges: Vec<(&'static str, ModuleGauges)>,
    /// When the tables' gauges and the databases were last read at a
    /// scrape, and what was found; reused for [`SCRAPE_REUSE`], one read at
    /// a time.
    pub(crate) scraped: tokio::sync::Mutex<Option<(std::time::Instant, Scraped)>>,
    /// The last read of the tables' gauges while it still runs past its
    /// scrape: never dropped mid-query (a connection would go back to its
    /// pool with the query still running on the server, and the next
    /// borrower would wait behind it), and never run twice at once.
    pub(crate) table_read: tokio::sync::Mutex<Option<tokio::task::JoinHandle<bool>>>,
}

/// What a scrape found beyond the counters kept in memory.
#[derive(Clone, Copy)]
pub(crate) struct Scraped {
    /// Every local module's database answered a ping.
    databases: bool,
    /// Every gauge read from the modules' tables answered in time.
    tables: bool,
}

/// A remote process's last readiness probe: when, and what it found.
pub(crate) type LastProbe = tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>;

/// How long a scrape waits for each module's gauges before giving up on them.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the gauges read from the modules' tables are taken as known:
/// `/metrics` is served to anyone (ADR 0008), and a flood of scrapes must
/// not become a flood of queries taking the pools' connections from the
/// API. Prometheus scrapes every 15 s or so.
const SCRAPE_REUSE: Duration = Duration::from_secs(1);

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a check of readiness is taken as known: readiness asked
/// often, or by many at once (it is open to anyone, and not rate limited),
/// costs each local database at most one ping, and each remote process at
/// most one check (its own database ping), this often. The pings would
/// otherwise take the pools' connections from the API.
const PROBE_REUSE: Duration = Duration::from_secs(1);

/// `check`'s outcome, or the one `last` holds if it is under
/// [`PROBE_REUSE`] old; one check at a time, and the wait for another
/// request's check counts against [`CHECK_TIMEOUT`] too.
async fn reused(
    last: &LastProbe,
    check: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    let reused = async {
        let mut last = last.lock().await;
        match &*last {
            Some((at, outcome)) if at.elapsed() < PROBE_REUSE => outcome.clone(),
            _ => {
                let outcome = check.await;
                *last = Some((std::time::Instant::now(), outcome.clone()));
                outcome
            }
        }
    };
    tokio::time::timeout(CHECK_TIMEOUT, reused)
        .await
        .unwrap_or_else(|_| Err("no answer in time".to_owned()))
}

/// `GET /health/live`: the process is up and serving. The answer never
/// changes, so it is written and tagged once (`web::etag::tag_of`, what
/// the ETag middleware would compute) instead of per probe.
pub(crate) async fn live() -> HttpResponse {
    static LIVE: std::sync::LazyLock<(actix_web::web::Bytes, HeaderValue)> =
        std::sync::LazyLock::new(|| {
            const BODY: &[u8] = br#"{"status":"ok"}"#;
            (
                actix_web::web::Bytes::from_static(BODY),
                web::etag::tag_of(BODY),
            )
        });
    let (body, etag) = &*LIVE;
    HttpResponse::Ok()
        .insert_header(header::ContentType::json())
        .insert_header((header::ETAG, etag.clone()))
        .body(body.clone())
}

/// `GET /health/ready`: whether this instance can serve its modules.
///
/// 503 only when a local module's database does not answer: the instance
/// cannot serve, and a load balancer should send its traffic elsewhere. A
/// remote module or the broker that is down is reported (`degraded`, 200):
/// every instance would say the same, so taking them all out of rotation
/// would turn one module's outage into the whole shop's; the breakers and
/// the outbox already contain it. Errors are named, never shown raw (the
/// detail is logged), and the checks only to an admin.
///
/// A remote module is up when its process is ready itself: each process
/// asks the others with `?scope=process`, which answers for the asked
/// process alone (its databases, not draining) and asks no one further, so
/// processes that call each other never ask round in a loop.
pub(crate) async fn ready(
    deps: Data<Dependencies>,
    admin: Option<auth::AdminOnly>,
    req: HttpRequest,
) -> HttpResponse {
    if deps.draining.load(std::sync::atomic::Ordering::Relaxed) {
        metrics::gauge!("health_ready").set(0.0);
        return HttpResponse::ServiceUnavailable().json(json!({"status": "draining"}));
    }
    // Anything else in the query is ignored: a probe never fails on it.
    let own_only = req
        .query_string()
        .split('&')
        .any(|pair| pair == "scope=process");
    let mut checks = Map::new();
    let mut ready = true;
    let mut degraded = false;
    // All at once: the answer takes the slowest check, not their sum (the
    // first one on a worker opens a connection per module).
    let pings = deps.pools.iter().enumerate().map(|(i, (module, pool))| {
        let deps = &deps;
        async move {
            let ping = async {
                db::ping(pool, CHECK_TIMEOUT).await.map_err(|detail| {
                    tracing::warn!(module, error = %detail, "readiness: database check failed");
                    if detail.starts_with("no answer") {
                        "no answer in time".to_owned()
                    } else {
                        "unreachable".to_owned()
                    }
                })
            };
            let outcome = match deps.pinged.get(i) {
                Some(last) => reused(last, ping).await,
                None => ping.await,
            };
            (*module, outcome)
        }
    });
    let remotes = if own_only { &[][..] } else { &deps.remotes[..] };
    let probes = remotes.iter().enumerate().map(|(i, (module, url))| {
        let deps = &deps;
        async move {
            let policy = deps.policies.get(Dependency::Module(*module));
            let outcome = if policy.state() == resilience::State::Open {
                Err("circuit breaker open".to_owned())
            } else if let Some(probed) = deps.probed.get(i) {
                reused(probed, probe(&deps.client, url)).await
            } else {
                probe(&deps.client, url).await
            };
            (*module, outcome)
        }
    });
    let (pings, probes) = futures_util::future::join(
        futures_util::future::join_all(pings),
        futures_util::future::join_all(probes),
    )
    .await;
    for (module, outcome) in pings {
        ready &= outcome.is_ok();
        checks.insert(format!("database:{module}"), check_json(outcome));
    }
    for (module, outcome) in probes {
        degraded |= outcome.is_err();
        checks.insert(format!("module:{}", module.as_str()), check_json(outcome));
    }
    if let Some(broker) = &deps.broker {
        let outcome = if broker.is_connected() {
            Ok(())
        } else {
            Err("not connected".to_owned())
        };
        degraded |= outcome.is_err();
        checks.insert("broker:rabbitmq".to_owned(), check_json(outcome));
    }
    metrics::gauge!("health_ready").set(if ready { 1.0 } else { 0.0 });
    let (status, word) = match (ready, degraded) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        (true, true) => (StatusCode::OK, "degraded"),
        (true, false) => (StatusCode::OK, "ready"),
    };
    // What runs where and what is down is for operators: the checks are
    // shown to an admin's token only; probes and load balancers need the
    // status code alone.
    let body = if admin.is_some() {
        json!({"status": word, "checks": checks})
    } else {
        json!({"status": word})
    };
    HttpResponse::build(status).json(body)
}

/// Whether the process serving a remote module is ready itself
/// (`/health/ready?scope=process`): up, reachable but unable to serve (its
/// database down, or draining), or unreachable.
async fn probe(client: &reqwest::Client, base: &Url) -> Result<(), String> {
    let mut url = base.clone();
    let path = format!("{}/health/ready", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(Some("scope=process"));
    match client.get(url).timeout(CHECK_TIMEOUT).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("answered {}", r.status())),
        Err(e) if e.is_timeout() => Err("no answer in time".to_owned()),
        Err(_) => Err("cannot connect".to_owned()),
    }
}

fn check_json(outcome: Result<(), String>) -> Value {
    match outcome {
        Ok(()) => json!({"status": "up"}),
        Err(error) => json!({"status": "down", "error": error}),
    }
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(deps: Data<Dependencies>) -> HttpResponse {
    for (module, pool) in &deps.pools {
        db::record_pool_metrics(module, pool);
    }
    let scraped = {
        let mut last = deps.scraped.lock().await;
        match *last {
            Some((at, scraped)) if at.elapsed() < SCRAPE_REUSE => scraped,
            _ => {
                let pings = deps
                    .pools
                    .iter()
                    .map(|(_, pool)| db::ping(pool, SCRAPE_TIMEOUT));
                let (pings, tables) = futures_util::future::join(
                    futures_util::future::join_all(pings),
                    table_gauges(&deps),
                )
                .await;
                let scraped = Scraped {
                    databases: pings.iter().all(Result::is_ok),
                    tables,
                };
                *last = Some((std::time::Instant::now(), scraped));
                scraped
            }
        }
    };
    // Ready as /health/ready means it: not draining, and every local
    // module's database answers. A table gauge too slow to read (a count
    // over a huge backlog, a table locked by a migration) is not that:
    // it has a gauge of its own.
    let ready = !deps.draining.load(std::sync::atomic::Ordering::Relaxed) && scraped.databases;
    metrics::gauge!("health_ready").set(if ready { 1.0 } else { 0.0 });
    metrics::gauge!("table_gauges_read").set(if scraped.tables { 1.0 } else { 0.0 });
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body({
            telemetry::collect_process_metrics();
            deps.metrics.render()
        })
}

/// Reads the gauges the local modules keep in their tables, waiting up to
/// [`SCRAPE_TIMEOUT`]; whether they were read in time. A read still
/// running from an earlier scrape is waited for, not doubled; one that
/// outlasts this scrape runs on (to its end or the statement timeout) and
/// is met by the next.
async fn table_gauges(deps: &Data<Dependencies>) -> bool {
    let mut slot = deps.table_read.lock().await;
    let mut read = match slot.take() {
        Some(running) => running,
        None => tokio::spawn(read_table_gauges(deps.clone())),
    };
    match tokio::time::timeout(SCRAPE_TIMEOUT, &mut read).await {
        Ok(answered) => answered.unwrap_or(false),
        Err(_) => {
            *slot = Some(read);
            false
        }
    }
}

/// Reads the gauges the local modules keep in their tables (outbox, dead
/// letters, sagas), all at once; whether every read answered.
async fn read_table_gauges(deps: Data<Dependencies>) -> bool {
    let messaging = deps
        .pools
        .iter()
        .map(|(module, pool)| events::record_metrics(module, pool));
    let own = deps.gauges.iter().filter_map(|(module, gauges)| {
        let (_, pool) = deps.pools.iter().find(|(m, _)| m == module)?;
        Some(gauges(pool.clone()))
    });
    let (messaging, own) = futures_util::future::join(
        futures_util::future::join_all(messaging),
        futures_util::future::join_all(own),
    )
    .await;
    messaging.iter().chain(&own).all(Result::is_ok)
}

/// The methods each documented path answers, from the served OpenAPI
/// document: a request on a known path with another method is a 405 with
/// `Allow`, not a 404.
pub(crate) struct RouteTable {
    /// Path templates split in segments (`None` = a `{parameter}`), and the
    /// methods of each, upper-case.
    routes: Vec<(Vec<Option<String>>, Vec<String>)>,
    /// The templates as the document writes them (`/api/v1/products/{id}`).
    templates: Vec<String>,
}

impl RouteTable {
    pub(crate) fn new(doc: &utoipa::openapi::OpenApi) -> RouteTable {
        let routes = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let segments = path
                    .trim_start_matches('/')
                    .split('/')
                    .map(|s| (!s.starts_with('{')).then(|| s.to_owned()))
                    .collect();
                let methods = [
                    ("GET", &item.get),
                    ("PUT", &item.put),
                    ("POST", &item.post),
                    ("DELETE", &item.delete),
                    ("PATCH", &item.patch),
                    ("HEAD", &item.head),
                    ("OPTIONS", &item.options),
                ]
                .into_iter()
                .filter(|(_, operation)| operation.is_some())
                .map(|(method, _)| method.to_owned())
                .collect();
                (segments, methods)
            })
            .collect();
        let templates = doc.paths.paths.keys().cloned().collect();
        RouteTable { routes, templates }
    }

    /// Every documented path template, in the document's order.
    pub(crate) fn templates(&self) -> &[String] {
        &self.templates
    }

    /// The methods `path` answers, if the API documents it.
    fn allowed(&self, path: &str) -> Option<Vec<String>> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut allowed: Vec<String> = self
            .routes
            .iter()
            .filter(|(template, _)| {
                template.len() == segments.len()
                    && template
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| t.as_deref().is_none_or(|t| t == *s))
            })
            .flat_map(|(_, methods)| methods.iter().cloned())
            .collect();
        allowed.sort();
        allowed.dedup();
        (!allowed.is_empty()).then_some(allowed)
    }
}

/// What no route answered: 405 with `Allow` on a documented path, else 404.
pub(crate) async fn unrouted(req: actix_web::HttpRequest, table: Data<RouteTable>) -> HttpResponse {
    match table.allowed(req.path()) {
        Some(methods) if !methods.iter().any(|m| m == req.method().as_str()) => {
            web::problem::refuse_method(&req, &methods.join(", "))
        }
        _ => web::problem::not_found(req).await,
    }
}
