//! Which modules this process serves, and how.
//!
//! `modules.enabled` lists the modules served here. Each module is `local`
//! (its routes, data and workers live in this process) or `remote` (its
//! routes are forwarded to `modules.<name>.url`, and other modules reach it
//! through its `-api` HTTP client). A process with no module enabled and
//! modules set `remote` is a gateway: it forwards each of them.

use serde::Deserialize;
use url::Url;

/// The modules the binary knows.
///
/// Adding a module adds its variant here, with its facts (name, route
/// prefixes, subscriptions) in `ModuleName::facts`: every process knows
/// every module (to forward to it, call it, or refuse its routes),
/// whichever modules it holds.
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
                subscribes: &[],
                route_prefixes: user_api::ROUTE_PREFIXES,
            },
            ModuleName::Catalog => &Facts {
                name: "catalog",
                subscribes: catalog_api::SUBSCRIBES,
                route_prefixes: catalog_api::ROUTE_PREFIXES,
            },
            ModuleName::Notification => &Facts {
                name: "notification",
                subscribes: notification_api::SUBSCRIBES,
                route_prefixes: notification_api::ROUTE_PREFIXES,
            },
            ModuleName::Inventory => &Facts {
                name: "inventory",
                subscribes: &[],
                route_prefixes: inventory_api::ROUTE_PREFIXES,
            },
            ModuleName::Payment => &Facts {
                name: "payment",
                subscribes: &[],
                route_prefixes: payment_api::ROUTE_PREFIXES,
            },
            ModuleName::Order => &Facts {
                name: "order",
                subscribes: &[],
                route_prefixes: order_api::ROUTE_PREFIXES,
            },
        }
    }

    /// The module's name in config, metrics and logs, and its cargo feature
    /// in `app`.
    pub fn as_str(self) -> &'static str {
        self.facts().name
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

/// `[modules]`: `enabled`, and one `[modules.<name>]` per module (a module
/// without one runs locally when enabled).
#[derive(Debug, Clone)]
pub struct ModulesSettings {
    /// Modules served by this process.
    pub enabled: Vec<ModuleName>,
    /// Each module's placement, in [`ModuleName::ALL`] order.
    placements: Vec<(ModuleName, ModuleTopology)>,
}

const LOCAL: ModuleTopology = ModuleTopology {
    mode: Mode::Local,
    url: None,
};

impl<'de> Deserialize<'de> for ModulesSettings {
    /// A map read key by key, so that an error below a module names it
    /// (`modules.catalog.url`) and an unknown key is refused.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ModulesSettings;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of `enabled` and one table per module")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ModulesSettings, A::Error> {
                let mut enabled = None;
                let mut placements = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "enabled" {
                        enabled = Some(map.next_value_seed(ModuleList)?);
                    } else if let Some(module) = ModuleName::parse(&key) {
                        placements.push((module, map.next_value::<ModuleTopology>()?));
                    } else {
                        let mut known = vec!["enabled"];
                        known.extend(ModuleName::ALL.iter().map(|m| m.as_str()));
                        return Err(serde::de::Error::custom(format!(
                            "unknown field `{key}`, expected one of {}",
                            known.join(", ")
                        )));
                    }
                }
                let enabled = enabled.ok_or_else(|| serde::de::Error::missing_field("enabled"))?;
                placements.sort_by_key(|(m, _)| ModuleName::ALL.iter().position(|n| n == m));
                Ok(ModulesSettings {
                    enabled,
                    placements,
                })
            }
        }
        d.deserialize_map(Visitor)
    }
}

impl ModulesSettings {
    /// The placement of `module`.
    pub fn topology(&self, module: ModuleName) -> &ModuleTopology {
        self.placements
            .iter()
            .find(|(m, _)| *m == module)
            .map_or(&LOCAL, |(_, topology)| topology)
    }

    /// Enabled modules that run in this process, in start order (a module
    /// after those it calls), whatever the order of `modules.enabled`.
    pub fn local(&self) -> impl Iterator<Item = ModuleName> + '_ {
        ModuleName::ALL
            .iter()
            .copied()
            .filter(|m| self.enabled.contains(m) && self.topology(*m).mode == Mode::Local)
    }

    /// Modules served by another process, with its URL, whose routes this
    /// process forwards: those enabled here with mode `remote`; in a
    /// process with no module enabled (a gateway: `APP__MODULES__ENABLED=`
    /// empty, as the all-split topology starts it), every module given
    /// mode `remote`.
    pub fn remote(&self) -> impl Iterator<Item = (ModuleName, &Url)> + '_ {
        let gateway = self.enabled.is_empty();
        ModuleName::ALL
            .iter()
            .copied()
            .filter(move |m| gateway || self.enabled.contains(m))
            .filter_map(|m| {
                let topology = self.topology(m);
                match (topology.mode, &topology.url) {
                    (Mode::Remote, Some(url)) => Some((m, url)),
                    _ => None,
                }
            })
    }

    /// Whether this process serves or forwards any module's routes (and so
    /// verifies access tokens).
    pub fn serves_any(&self) -> bool {
        !self.enabled.is_empty() || self.remote().next().is_some()
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
        let user = self.topology(ModuleName::User);
        match user.mode {
            Mode::Remote => user.url.as_ref(),
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
    /// in (`compiled_in`). Returns the key and the problem.
    pub(crate) fn validate(
        &self,
        compiled_in: impl Fn(ModuleName) -> bool,
    ) -> Result<(), (String, String)> {
        if let Some(missing) = self.local().find(|m| !compiled_in(*m)) {
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
                // A module's routes are appended to its URL: a query or a
                // fragment would swallow them (every call a 404), and a
                // user and password would become a second Authorization
                // header beside the service token (every call a 401).
                (_, Some(url))
                    if !url.username().is_empty()
                        || url.password().is_some()
                        || url.query().is_some()
                        || url.fragment().is_some() =>
                {
                    return Err((
                        key,
                        "must be a plain base URL (scheme, host, port, path): no user, \
                         password, query or fragment"
                            .into(),
                    ));
                }
                _ => {}
            }
        }
        // Every route verifies tokens; the keys come from the user module.
        if self.serves_any() && !self.is_local(ModuleName::User) && self.user_url().is_none() {
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
struct ModuleList;

impl<'de> serde::de::DeserializeSeed<'de> for ModuleList {
    type Value = Vec<ModuleName>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<ModuleName>, D::Error> {
        module_list(d)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(toml: &str) -> Result<ModulesSettings, config::ConfigError> {
        config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()?
            .get("modules")
    }

    /// Placements are read by module name; a module without one runs here
    /// when enabled; a wrong value, an unknown module and a missing
    /// `enabled` are refused.
    #[test]
    fn placements_are_read_by_module_name() {
        let modules = read(
            "[modules]\nenabled = [\"order\", \"user\"]\n\
             [modules.catalog]\nmode = \"remote\"\nurl = \"http://catalog:8080\"\n",
        )
        .unwrap();
        assert_eq!(
            modules.local().collect::<Vec<_>>(),
            [ModuleName::User, ModuleName::Order]
        );
        assert_eq!(
            modules.remote_url(ModuleName::Catalog).map(Url::as_str),
            Some("http://catalog:8080/")
        );
        assert_eq!(modules.topology(ModuleName::Payment).mode, Mode::Local);

        let err = read("[modules]\nenabled = []\n[modules.catalog]\nmode = \"far\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("far") && err.contains("modules"), "{err}");
        let err = read("[modules]\nenabled = []\n[modules.shipping]\nmode = \"local\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `shipping`"), "{err}");
        let err = read("[modules]\n[modules.user]\nmode = \"local\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("enabled"), "{err}");
    }

    /// A process forwards the enabled modules set remote; with no module
    /// enabled (the all-split topology's gateway) it forwards every module
    /// set remote, and verifies tokens for them.
    #[test]
    fn a_process_with_no_module_enabled_forwards_every_remote_one() {
        let remote = "[modules.catalog]\nmode = \"remote\"\nurl = \"http://catalog:8080\"\n\
                      [modules.user]\nmode = \"remote\"\nurl = \"http://user:8080\"\n";
        let forwarded = |modules: &ModulesSettings| -> Vec<ModuleName> {
            modules.remote().map(|(m, _)| m).collect()
        };
        let some = read(&format!(
            "[modules]\nenabled = [\"order\", \"user\"]\n{remote}"
        ))
        .unwrap();
        assert_eq!(forwarded(&some), [ModuleName::User]);
        let gateway = read(&format!("[modules]\nenabled = []\n{remote}")).unwrap();
        assert_eq!(forwarded(&gateway), [ModuleName::User, ModuleName::Catalog]);
        assert_eq!(gateway.local().count(), 0);
        assert!(gateway.serves_any());
        assert_eq!(gateway.validate(|_| true), Ok(()));
        let nothing = read("[modules]\nenabled = []\n").unwrap();
        assert!(!nothing.serves_any());
        // Forwarding without the user module's URL: no keys to verify tokens with.
        let blind = read(
            "[modules]\nenabled = []\n[modules.catalog]\nmode = \"remote\"\nurl = \"http://c:1\"\n",
        )
        .unwrap();
        assert_eq!(
            blind.validate(|_| true).map_err(|(key, _)| key),
            Err("modules.user.mode".to_owned())
        );
    }

    /// A module's URL is a base its routes are appended to: one with a
    /// user and password, a query or a fragment is refused at start (each
    /// made every call fail at run time); a path is fine.
    #[test]
    fn a_module_url_is_a_plain_base() {
        let with = |url: &str| {
            read(&format!(
                "[modules]\nenabled = [\"user\"]\n\
                 [modules.catalog]\nmode = \"remote\"\nurl = \"{url}\"\n"
            ))
            .unwrap()
            .validate(|_| true)
            .map_err(|(key, _)| key)
        };
        for refused in [
            "http://u:p@catalog:8080",
            "http://u@catalog:8080",
            "http://catalog:8080/?a=1",
            "http://catalog:8080/#top",
        ] {
            assert_eq!(
                with(refused),
                Err("modules.catalog.url".to_owned()),
                "{refused}"
            );
        }
        assert_eq!(with("https://gateway.internal/shop/"), Ok(()));
    }
}
