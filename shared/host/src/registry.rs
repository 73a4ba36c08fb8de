//! A module as data: what it is (its schema and migrations, its routes, its
//! settings section, its gauges) and how it is built when a process serves
//! it. Each module crate exports one [`Registration`]; the composition root
//! lists the ones compiled in and loops over them.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use actix_web::web::{self as aweb, Data};
use auth::{KeySet, ServiceTokens};
use catalog_api::CatalogApi;
use futures_util::future::BoxFuture;
use inventory_api::InventoryApi;
use payment_api::PaymentApi;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use url::Url;

use crate::Settings;
use crate::compose::{Dependency, Policies};
use crate::modules::ModuleName;

/// A module, as the process hosting it sees it.
pub struct Registration {
    /// The module it registers.
    pub module: ModuleName,
    /// Its schema and embedded migrations.
    pub migrations: db::ModuleMigrations,
    /// Mounts its routes below `/api/v1` (the spec is built from them too).
    pub routes: fn(&mut web::Routes<'_, '_>),
    /// The spec's tags its operations use: name and description.
    pub tags: &'static [(&'static str, &'static str)],
    /// Reads its `[<module>]` section ([`section`] of its settings type).
    pub settings: ReadSection,
    /// Keys of its section whose environment variable is a comma-separated
    /// list (`APP__<MODULE>__<KEY>=a,b`).
    pub list_keys: &'static [&'static str],
    /// Gauges it reads from its own tables when `/metrics` is scraped.
    pub gauges: Option<ModuleGauges>,
    /// Builds it over its pool, when this process serves it.
    pub build: for<'a> fn(Context<'a>) -> BoxFuture<'a, anyhow::Result<Local>>,
}

impl Registration {
    /// A module whose section reads as `S`, with no spec tags, list keys
    /// or gauges (add them with the methods below).
    pub const fn new<S: Section + DeserializeOwned>(
        module: ModuleName,
        migrations: db::ModuleMigrations,
        routes: fn(&mut web::Routes<'_, '_>),
        build: for<'a> fn(Context<'a>) -> BoxFuture<'a, anyhow::Result<Local>>,
    ) -> Registration {
        Registration {
            module,
            migrations,
            routes,
            tags: &[],
            settings: section::<S>,
            list_keys: &[],
            gauges: None,
            build,
        }
    }

    /// With the spec's tags of its operations.
    #[must_use]
    pub const fn tags(mut self, tags: &'static [(&'static str, &'static str)]) -> Registration {
        self.tags = tags;
        self
    }

    /// With keys of its section that environment variables give as lists.
    #[must_use]
    pub const fn list_keys(mut self, keys: &'static [&'static str]) -> Registration {
        self.list_keys = keys;
        self
    }

    /// With gauges read from its tables at each scrape.
    #[must_use]
    pub const fn gauges(mut self, gauges: ModuleGauges) -> Registration {
        self.gauges = Some(gauges);
        self
    }
}

/// Reads a module's section from the configuration, at the key given.
pub type ReadSection = fn(
    &config::Config,
    &str,
) -> Result<(Arc<dyn Section>, db::ModuleDatabase), config::ConfigError>;

/// Reads a module's gauges from its pool.
pub type ModuleGauges = fn(db::Pool) -> BoxFuture<'static, Result<(), String>>;

/// A module's own settings section, `[<module>]` (its `[<module>.database]`
/// is read by the host too: [`Settings::module_database`]).
pub trait Section: Any + Debug + Send + Sync {
    /// Checks what types alone cannot, for the environment `APP_ENV` names.
    /// Returns the key below the section and the problem.
    ///
    /// # Errors
    /// The first key that is wrong.
    fn validate(&self, environment: &str) -> Result<(), (String, String)> {
        let _ = environment;
        Ok(())
    }

    /// Checks what this process needs of the section when it serves the
    /// module itself (not when the module is remote here): what building
    /// the module would otherwise refuse only after the start began.
    ///
    /// # Errors
    /// The first key that is wrong.
    fn validate_served(&self, environment: &str) -> Result<(), (String, String)> {
        let _ = environment;
        Ok(())
    }
}

/// Reads the section at `key` as `S`, and its `database` table; errors
/// name the key.
///
/// # Errors
/// The section is missing or does not match `S`.
pub fn section<S: Section + DeserializeOwned>(
    config: &config::Config,
    key: &str,
) -> Result<(Arc<dyn Section>, db::ModuleDatabase), config::ConfigError> {
    let section = config.get::<S>(key)?;
    let database = config.get(&format!("{key}.database"))?;
    Ok((Arc::new(section), database))
}

/// What a module is built from.
pub struct Context<'a> {
    /// The whole configuration; the module's section is [`Context::section`].
    pub settings: &'a Settings,
    /// The module's own pool.
    pub pool: db::Pool,
    /// The client of calls to other processes.
    pub client: &'a reqwest::Client,
    /// One resilience policy per remote dependency.
    pub policies: &'a Policies,
    /// The identity modules call each other with.
    pub services: &'a Arc<ServiceTokens>,
    /// Turns true when background jobs must stop.
    pub stopped: &'a watch::Receiver<bool>,
    /// The in-process APIs of the modules built before this one.
    pub apis: &'a Apis,
    /// The URL of the module's database (its pool's), for a connection of
    /// its own (`LISTEN`).
    pub database_url: &'a str,
}

impl Context<'_> {
    /// The module's own section, typed.
    ///
    /// # Errors
    /// No section of type `S` was loaded (a registration naming another
    /// module's settings type).
    pub fn section<S: Section>(&self) -> anyhow::Result<&S> {
        self.settings.section::<S>()
    }

    /// The policy of calls to `dependency`.
    pub fn policy(&self, dependency: Dependency) -> Arc<resilience::Policy> {
        self.policies.get(dependency)
    }

    /// How this module reaches `module`: its in-process implementation when
    /// it is served here (`local`, from [`Context::apis`]), else the HTTP
    /// client `remote` builds for its URL and policy; either one wrapped by
    /// `observed` (the `-api` crate's `Observed`: one span and the same RED
    /// metrics whichever implementation serves the call).
    ///
    /// # Errors
    /// Neither: the module is not served here and has no URL.
    pub fn module_api<T: ?Sized>(
        &self,
        module: ModuleName,
        local: Option<Arc<T>>,
        remote: impl FnOnce(reqwest::Client, Url, Arc<resilience::Policy>) -> Arc<T>,
        observed: impl FnOnce(Arc<T>) -> Arc<T>,
    ) -> anyhow::Result<Arc<T>> {
        if let Some(local) = local {
            return Ok(observed(local));
        }
        match self.settings.modules.remote_url(module) {
            Some(url) => Ok(observed(remote(
                self.client.clone(),
                url.clone(),
                self.policy(Dependency::Module(module)),
            ))),
            None => anyhow::bail!(
                "modules.{}.url: a module here calls the {} module: serve it here \
                 (modules.enabled) or set its mode = \"remote\" and url",
                module.as_str(),
                module.as_str()
            ),
        }
    }
}

/// The in-process APIs other modules may call, when served here.
#[derive(Default, Clone)]
pub struct Apis {
    /// The catalog's.
    pub catalog: Option<Arc<dyn CatalogApi>>,
    /// The inventory's.
    pub inventory: Option<Arc<dyn InventoryApi>>,
    /// The payment module's.
    pub payment: Option<Arc<dyn PaymentApi>>,
}

impl Apis {
    fn merge(&mut self, other: Apis) {
        self.catalog = other.catalog.or(self.catalog.take());
        self.inventory = other.inventory.or(self.inventory.take());
        self.payment = other.payment.or(self.payment.take());
    }
}

/// Registers what a module's routes read (`Data<...>`) on each worker.
pub type AppData = Arc<dyn Fn(&mut aweb::ServiceConfig) + Send + Sync>;

/// A module built and running in this process.
pub struct Local {
    /// What its routes read.
    pub data: AppData,
    /// Its event handler, when it subscribes.
    pub subscription: Option<events::Subscription>,
    /// Its background jobs, spawned; they stop when `stopped` turns true.
    pub jobs: Vec<JoinHandle<()>>,
    /// What it offers other modules in process.
    pub apis: Apis,
    /// The keys that verify access tokens (the user module's).
    pub keys: Option<KeySet>,
}

impl Local {
    /// A module whose routes read `data`.
    pub fn new<T: Send + Sync + 'static>(data: Data<T>) -> Local {
        Local::with_data(Arc::new(move |cfg: &mut aweb::ServiceConfig| {
            cfg.app_data(data.clone());
        }))
    }

    /// A module whose routes read what `data` registers.
    pub fn with_data(data: AppData) -> Local {
        Local {
            data,
            subscription: None,
            jobs: Vec::new(),
            apis: Apis::default(),
            keys: None,
        }
    }

    /// With a background job.
    #[must_use]
    pub fn job(mut self, job: JoinHandle<()>) -> Local {
        self.jobs.push(job);
        self
    }

    /// With an event handler.
    #[must_use]
    pub fn subscription(mut self, subscription: events::Subscription) -> Local {
        self.subscription = Some(subscription);
        self
    }

    /// Offering `apis` to the modules built after it.
    #[must_use]
    pub fn apis(mut self, apis: Apis) -> Local {
        self.apis = apis;
        self
    }

    /// With the keys that verify access tokens.
    #[must_use]
    pub fn keys(mut self, keys: KeySet) -> Local {
        self.keys = Some(keys);
        self
    }
}

/// What the process gives every module it builds.
pub struct Host<'a> {
    /// The settings.
    pub settings: &'a Settings,
    /// The client of calls to other processes.
    pub client: &'a reqwest::Client,
    /// One resilience policy per remote dependency.
    pub policies: &'a Policies,
    /// The identity modules call each other with.
    pub services: &'a Arc<ServiceTokens>,
    /// Turns true when background jobs must stop.
    pub stopped: &'a watch::Receiver<bool>,
    /// The database server's URL (a module's own `[<module>.database]` URL
    /// wins, [`Settings::module_database_url`]).
    pub database_url: &'a str,
}

/// The registration of `module` among `compiled`.
///
/// # Errors
/// It is not compiled in (settings refuse to serve such a module first).
pub fn find(
    compiled: &[&'static Registration],
    module: ModuleName,
) -> anyhow::Result<&'static Registration> {
    compiled
        .iter()
        .copied()
        .find(|r| r.module == module)
        .ok_or_else(|| anyhow::anyhow!("the {} module is not compiled in", module.as_str()))
}

/// Builds the modules served here, in start order (a module's in-process
/// dependencies first), each over the pool `pool` gives it. Each module's
/// background jobs are moved to `started` as soon as it is built (its
/// [`Local::jobs`] left empty), so that when a later module fails, the
/// caller still holds every job started and can stop them and wait.
///
/// # Errors
/// The first module that cannot be built, or a module served here that is
/// not in `compiled` (settings refuse that first).
pub async fn build_local(
    host: Host<'_>,
    compiled: &[&'static Registration],
    mut pool: impl FnMut(ModuleName) -> anyhow::Result<db::Pool>,
    started: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Vec<(&'static Registration, Local)>> {
    let mut apis = Apis::default();
    let mut built = Vec::new();
    for module in host.settings.modules.local() {
        let registration = find(compiled, module)?;
        let cx = Context {
            settings: host.settings,
            pool: pool(module)?,
            client: host.client,
            policies: host.policies,
            services: host.services,
            stopped: host.stopped,
            apis: &apis,
            database_url: host.settings.module_database_url(module, host.database_url),
        };
        let mut module = (registration.build)(cx).await?;
        started.append(&mut module.jobs);
        apis.merge(module.apis.clone());
        built.push((registration, module));
    }
    Ok(built)
}
