//! The module registry: which modules this process serves, and how.
//!
//! `modules.enabled` lists the modules served here. Each module is `local`
//! (its routes, data and workers live in this process) or `remote` (its
//! routes are forwarded to `modules.<name>.url`, and other modules reach it
//! through its `-api` HTTP client).

use serde::Deserialize;
use url::Url;

/// The modules the binary knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModuleName {
    /// Accounts, sign-in, tokens.
    User,
    /// Products, categories, search, the product cache.
    Catalog,
    /// Email and webhooks, driven by events.
    Notification,
    /// Stock and reservations.
    Inventory,
    /// Card payments and their ledger.
    Payment,
    /// Carts, orders and the checkout saga.
    Order,
}

/// What the binary knows of a module (see [`ModuleName::facts`]).
struct Facts {
    name: &'static str,
    compiled_in: bool,
    subscribes: &'static [&'static str],
    route_prefixes: &'static [&'static str],
}

impl ModuleName {
    /// Every module, in start order.
    pub const ALL: &[ModuleName] = &[
        ModuleName::User,
        ModuleName::Catalog,
        ModuleName::Notification,
        ModuleName::Inventory,
        ModuleName::Payment,
        ModuleName::Order,
    ];

    /// The module called `name`, if any.
    pub fn parse(name: &str) -> Option<ModuleName> {
        ModuleName::ALL.iter().copied().find(|m| m.as_str() == name)
    }

    /// What the binary knows of the module, whichever modules it holds:
    /// the one place a module's facts are listed.
    fn facts(self) -> &'static Facts {
        match self {
            ModuleName::User => &Facts {
                name: "user",
                compiled_in: cfg!(feature = "user"),
                subscribes: &[],
                route_prefixes: user_api::ROUTE_PREFIXES,
            },
            ModuleName::Catalog => &Facts {
                name: "catalog",
                compiled_in: cfg!(feature = "catalog"),
                subscribes: catalog_api::SUBSCRIBES,
                route_prefixes: catalog_api::ROUTE_PREFIXES,
            },
            ModuleName::Notification => &Facts {
                name: "notification",
                compiled_in: cfg!(feature = "notification"),
                subscribes: notification_api::SUBSCRIBES,
                route_prefixes: notification_api::ROUTE_PREFIXES,
            },
            ModuleName::Inventory => &Facts {
                name: "inventory",
                compiled_in: cfg!(feature = "inventory"),
                subscribes: &[],
                route_prefixes: inventory_api::ROUTE_PREFIXES,
            },
            ModuleName::Payment => &Facts {
                name: "payment",
                compiled_in: cfg!(feature = "payment"),
                subscribes: &[],
                route_prefixes: payment_api::ROUTE_PREFIXES,
            },
            ModuleName::Order => &Facts {
                name: "order",
                compiled_in: cfg!(feature = "order"),
                subscribes: &[],
                route_prefixes: order_api::ROUTE_PREFIXES,
            },
        }
    }

    /// The module's name in config, metrics and logs, and its cargo feature.
    pub fn as_str(self) -> &'static str {
        self.facts().name
    }

    /// Whether this binary holds the module (its cargo feature was on), so
    /// it can serve it; it can always forward to it and call its client.
    pub fn compiled_in(self) -> bool {
        self.facts().compiled_in
    }

    /// The event types the module subscribes to. They come from its `-api`
    /// crate, so every process knows them whichever modules it holds.
    pub fn subscribes(self) -> &'static [&'static str] {
        self.facts().subscribes
    }

    /// Route prefixes (below `/api/v1`) of the module, from its `-api` crate.
    pub fn route_prefixes(self) -> &'static [&'static str] {
        self.facts().route_prefixes
    }

    /// The module that publishes `event_type` (`<module>.<event>.v<n>`).
    pub fn publisher_of(event_type: &str) -> Option<ModuleName> {
        event_type.split('.').next().and_then(ModuleName::parse)
    }
}

/// An event that would travel between a module of this process and a module
/// that is not here (remote, or not served at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossingEvent {
    /// The event's type.
    pub event_type: &'static str,
    /// The module that publishes it.
    pub publisher: ModuleName,
    /// A module that subscribes to it.
    pub subscriber: ModuleName,
}

/// Where a module runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// In this process.
    Local,
    /// In another process, at `url`.
    Remote,
}

/// `[modules.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleTopology {
    /// Local or remote.
    pub mode: Mode,
    /// Base URL of the process serving the module, when remote.
    pub url: Option<Url>,
}

/// `[modules]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulesSettings {
    /// Modules served by this process.
    #[serde(deserialize_with = "module_list")]
    pub enabled: Vec<ModuleName>,
    /// The user module's placement.
    pub user: ModuleTopology,
    /// The catalog's placement.
    pub catalog: ModuleTopology,
    /// The notification module's placement.
    pub notification: ModuleTopology,
    /// The inventory's placement.
    pub inventory: ModuleTopology,
    /// The payment module's placement.
    pub payment: ModuleTopology,
    /// The order module's placement.
    pub order: ModuleTopology,
}

impl ModulesSettings {
    /// The placement of `module`.
    pub fn topology(&self, module: ModuleName) -> &ModuleTopology {
        match module {
            ModuleName::User => &self.user,
            ModuleName::Catalog => &self.catalog,
            ModuleName::Notification => &self.notification,
            ModuleName::Inventory => &self.inventory,
            ModuleName::Payment => &self.payment,
            ModuleName::Order => &self.order,
        }
    }

    /// Enabled modules that run in this process, in start order (a module
    /// after those it calls), whatever the order of `modules.enabled`.
    pub fn local(&self) -> impl Iterator<Item = ModuleName> + '_ {
        ModuleName::ALL
            .iter()
            .copied()
            .filter(|m| self.enabled.contains(m) && self.topology(*m).mode == Mode::Local)
    }

    /// Enabled modules served by another process, with its URL.
    pub fn remote(&self) -> impl Iterator<Item = (ModuleName, &Url)> + '_ {
        self.enabled.iter().filter_map(|m| {
            let topology = self.topology(*m);
            match (topology.mode, &topology.url) {
                (Mode::Remote, Some(url)) => Some((*m, url)),
                _ => None,
            }
        })
    }

    /// Whether `module` is served by this process.
    pub fn is_local(&self, module: ModuleName) -> bool {
        self.local().any(|m| m == module)
    }

    /// Where another process serves `module`, when this process calls it
    /// over HTTP: it is not served here and its placement has a URL.
    pub fn remote_url(&self, module: ModuleName) -> Option<&Url> {
        if self.is_local(module) {
            return None;
        }
        self.topology(module).url.as_ref()
    }

    /// Where to fetch the public keys of access tokens: `None` when the user
    /// module runs here, its URL when it is remote.
    pub fn user_url(&self) -> Option<&Url> {
        match self.user.mode {
            Mode::Remote => self.user.url.as_ref(),
            Mode::Local => None,
        }
    }

    /// The first event one of this process's modules exchanges with a
    /// module that does not run here: the in-process transport would lose it
    /// (published here and never seen there, or never received here).
    pub fn crossing_event(&self) -> Option<CrossingEvent> {
        ModuleName::ALL.iter().find_map(|&subscriber| {
            subscriber.subscribes().iter().find_map(|&event_type| {
                let publisher = ModuleName::publisher_of(event_type)?;
                (self.is_local(publisher) != self.is_local(subscriber)).then_some(CrossingEvent {
                    event_type,
                    publisher,
                    subscriber,
                })
            })
        })
    }

    /// Checks remote modules have a usable URL and local ones are compiled
    /// in. Returns the key and the problem.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if let Some(missing) = self.local().find(|m| !m.compiled_in()) {
            let name = missing.as_str();
            return Err((
                "modules.enabled".to_owned(),
                format!(
                    "the {name} module is not compiled into this binary (built without cargo \
                     feature \"{name}\"): serve it from a binary that has it and set \
                     modules.{name}.mode = \"remote\" here, or leave it out of modules.enabled"
                ),
            ));
        }
        for module in ModuleName::ALL {
            let topology = self.topology(*module);
            let key = format!("modules.{}.url", module.as_str());
            match (topology.mode, &topology.url) {
                (Mode::Remote, None) => {
                    return Err((
                        key,
                        "is required when the module's mode is \"remote\"".into(),
                    ));
                }
                (_, Some(url)) if !matches!(url.scheme(), "http" | "https") => {
                    return Err((key, format!("must be an http(s) URL, got `{url}`")));
                }
                _ => {}
            }
        }
        // Every route verifies tokens; the keys come from the user module.
        if !self.enabled.is_empty() && !self.is_local(ModuleName::User) && self.user_url().is_none()
        {
            return Err((
                "modules.user.mode".to_owned(),
                "this process serves modules and verifies access tokens with the user module's keys: \
                 enable the user module here, or set modules.user.mode = \"remote\" and modules.user.url"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

/// A list of module names; blank entries are ignored, so an empty
/// `APP__MODULES__ENABLED=` means no module.
fn module_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ModuleName>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    let mut modules = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let module = ModuleName::parse(name).ok_or_else(|| {
            let known: Vec<&str> = ModuleName::ALL.iter().map(|m| m.as_str()).collect();
            serde::de::Error::custom(format!(
                "unknown module `{name}` (known: {})",
                known.join(", ")
            ))
        })?;
        if !modules.contains(&module) {
            modules.push(module);
        }
    }
    Ok(modules)
}

/// In the full build, where every module crate is there to compare with.
#[cfg(all(test, all_modules))]
mod tests {
    use super::*;

    /// The registry's names are the module crates' own (schemas, queues,
    /// metrics and config sections agree), and each event's publisher is
    /// the module its name starts with.
    #[test]
    fn names_are_the_module_crates_own() {
        assert_eq!(ModuleName::User.as_str(), user::NAME);
        assert_eq!(ModuleName::Catalog.as_str(), catalog::NAME);
        assert_eq!(ModuleName::Inventory.as_str(), inventory::NAME);
        assert_eq!(ModuleName::Order.as_str(), order::NAME);
        assert_eq!(ModuleName::Payment.as_str(), payment::NAME);
        assert_eq!(ModuleName::Notification.as_str(), notification::NAME);
        assert_eq!(notification_api::NAME, notification::NAME);
        for module in ModuleName::ALL {
            assert!(module.compiled_in());
            for event in module.subscribes() {
                assert!(ModuleName::publisher_of(event).is_some(), "{event}");
            }
        }
    }
}
