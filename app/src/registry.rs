//! The modules compiled into this binary, as data: what each one is (its
//! schema and migrations, its routes, its settings section, its gauges) and
//! how it is built when this process serves it. The composition root
//! ([`crate::startup`]) and the spec ([`crate::openapi`]) loop over
//! [`COMPILED`]; no other code in `app/` names a module crate's routes or
//! migrations.
//!
//! Adding a module: its file here and one line in [`COMPILED`], with its
//! [`ModuleName`] variant, its settings section and its cargo feature.

// A binary built with some modules left out does not use every field or
// helper here: the modules' build functions read them.
#![cfg_attr(not(all_modules), allow(dead_code))]

#[cfg(feature = "catalog")]
mod catalog;
#[cfg(feature = "inventory")]
mod inventory;
#[cfg(feature = "notification")]
mod notification;
#[cfg(feature = "order")]
mod order;
#[cfg(feature = "payment")]
mod payment;
#[cfg(feature = "user")]
mod user;

use std::sync::Arc;

use actix_web::web::{self as aweb, Data};
use auth::{KeySet, ServiceTokens};
use catalog_api::CatalogApi;
use futures_util::future::BoxFuture;
use inventory_api::InventoryApi;
use payment_api::PaymentApi;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Settings;
use crate::compose::Policies;
use crate::modules::ModuleName;
use crate::ops::ModuleGauges;

/// A module compiled into this binary.
pub(crate) struct Registration {
    /// The module it registers.
    pub(crate) module: ModuleName,
    /// Its schema and embedded migrations.
    pub(crate) migrations: db::ModuleMigrations,
    /// Mounts its routes below `/api/v1` (the spec is built from them too).
    pub(crate) routes: fn(&mut utoipa_actix_web::service_config::ServiceConfig<'_>),
    /// Its `[<module>.database]` section.
    pub(crate) database: fn(&Settings) -> &db::ModuleDatabase,
    /// Gauges it reads from its own tables when `/metrics` is scraped.
    pub(crate) gauges: Option<ModuleGauges>,
    /// Builds it over its pool, when this process serves it.
    pub(crate) build: for<'a> fn(Context<'a>) -> BoxFuture<'a, anyhow::Result<Local>>,
}

/// Every module compiled in, in the order the spec lists their routes.
pub(crate) const COMPILED: &[Registration] = &[
    #[cfg(feature = "user")]
    user::REGISTRATION,
    #[cfg(feature = "catalog")]
    catalog::REGISTRATION,
    #[cfg(feature = "inventory")]
    inventory::REGISTRATION,
    #[cfg(feature = "order")]
    order::REGISTRATION,
    #[cfg(feature = "payment")]
    payment::REGISTRATION,
    #[cfg(feature = "notification")]
    notification::REGISTRATION,
];

/// The registration of `module`, when it is compiled in.
pub(crate) fn registration(module: ModuleName) -> Option<&'static Registration> {
    COMPILED.iter().find(|r| r.module == module)
}

/// The registration of a module served here: settings refuse to serve a
/// module that is not compiled in, so its absence is reported as an error.
pub(crate) fn local(module: ModuleName) -> anyhow::Result<&'static Registration> {
    registration(module)
        .ok_or_else(|| anyhow::anyhow!("the {} module is not compiled in", module.as_str()))
}

/// What a module is built from.
pub(crate) struct Context<'a> {
    pub(crate) settings: &'a Settings,
    /// The module's own pool.
    pub(crate) pool: db::Pool,
    /// The client of calls to other processes.
    pub(crate) client: &'a reqwest::Client,
    pub(crate) policies: &'a Policies,
    /// The identity modules call each other with.
    pub(crate) services: &'a Arc<ServiceTokens>,
    /// Turns true when background jobs must stop.
    pub(crate) stopped: &'a watch::Receiver<bool>,
    /// The in-process APIs of the modules built before this one.
    pub(crate) apis: &'a Apis,
}

/// The in-process APIs other modules may call, when served here.
#[derive(Default, Clone)]
pub(crate) struct Apis {
    pub(crate) catalog: Option<Arc<dyn CatalogApi>>,
    pub(crate) inventory: Option<Arc<dyn InventoryApi>>,
    pub(crate) payment: Option<Arc<dyn PaymentApi>>,
}

impl Apis {
    fn merge(&mut self, other: Apis) {
        self.catalog = other.catalog.or(self.catalog.take());
        self.inventory = other.inventory.or(self.inventory.take());
        self.payment = other.payment.or(self.payment.take());
    }
}

/// Registers what a module's routes read (`Data<...>`) on each worker.
pub(crate) type AppData = Arc<dyn Fn(&mut aweb::ServiceConfig) + Send + Sync>;

/// A module built and running in this process.
pub(crate) struct Local {
    /// What its routes read.
    pub(crate) data: AppData,
    /// Its event handler, when it subscribes.
    pub(crate) subscription: Option<events::Subscription>,
    /// Its background jobs, spawned; they stop when `stopped` turns true.
    pub(crate) jobs: Vec<JoinHandle<()>>,
    /// What it offers other modules in process.
    pub(crate) apis: Apis,
    /// The keys that verify access tokens (the user module's).
    pub(crate) keys: Option<KeySet>,
}

impl Local {
    /// A module whose routes read `data`.
    fn new<T: Send + Sync + 'static>(data: Data<T>) -> Local {
        Local::with_data(Arc::new(move |cfg: &mut aweb::ServiceConfig| {
            cfg.app_data(data.clone());
        }))
    }

    fn with_data(data: AppData) -> Local {
        Local {
            data,
            subscription: None,
            jobs: Vec::new(),
            apis: Apis::default(),
            keys: None,
        }
    }

    fn job(mut self, job: JoinHandle<()>) -> Local {
        self.jobs.push(job);
        self
    }

    fn subscription(mut self, subscription: events::Subscription) -> Local {
        self.subscription = Some(subscription);
        self
    }

    fn apis(mut self, apis: Apis) -> Local {
        self.apis = apis;
        self
    }
}

/// Builds the modules served here, in start order (a module's in-process
/// dependencies first), each over the pool `pool` gives it.
///
/// # Errors
/// The first module that cannot be built.
pub(crate) async fn build_local(
    settings: &Settings,
    mut pool: impl FnMut(ModuleName) -> anyhow::Result<db::Pool>,
    client: &reqwest::Client,
    policies: &Policies,
    services: &Arc<ServiceTokens>,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<(&'static Registration, Local)>> {
    let mut apis = Apis::default();
    let mut built = Vec::new();
    for module in settings.modules.local() {
        let registration = local(module)?;
        let cx = Context {
            settings,
            pool: pool(module)?,
            client,
            policies,
            services,
            stopped,
            apis: &apis,
        };
        let module = (registration.build)(cx).await?;
        apis.merge(module.apis.clone());
        built.push((registration, module));
    }
    Ok(built)
}
