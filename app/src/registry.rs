//! The modules compiled into this binary: each module crate exports its
//! [`Registration`] (schema, routes, settings section, gauges, how it is
//! built), and this list is the only place `app/` names them. The
//! composition root ([`crate::startup`]), the settings and the spec
//! ([`crate::openapi`]) loop over [`COMPILED`].
//!
//! Adding a module: its line here (with its cargo feature in
//! `app/Cargo.toml`), its variant of [`host::ModuleName`].

use host::{ModuleName, Registration};

/// Every module compiled in, in the order the spec lists their routes.
pub(crate) const COMPILED: &[&Registration] = &[
    #[cfg(feature = "user")]
    &user::REGISTRATION,
    #[cfg(feature = "catalog")]
    &catalog::REGISTRATION,
    #[cfg(feature = "inventory")]
    &inventory::REGISTRATION,
    #[cfg(feature = "order")]
    &order::REGISTRATION,
    #[cfg(feature = "payment")]
    &payment::REGISTRATION,
    #[cfg(feature = "notification")]
    &notification::REGISTRATION,
];

/// The registration of `module`, when it is compiled in.
pub(crate) fn registration(module: ModuleName) -> Option<&'static Registration> {
    local(module).ok()
}

/// The registration of a module served here: settings refuse to serve a
/// module that is not compiled in, so its absence is reported as an error.
pub(crate) fn local(module: ModuleName) -> anyhow::Result<&'static Registration> {
    host::registry::find(COMPILED, module)
}

/// In the full build, where every module crate is there to compare with.
#[cfg(all(test, all_modules))]
mod tests {
    use super::*;

    /// The registrations' names are the module crates' own (schemas,
    /// queues, metrics and config sections agree), every module is
    /// registered once, and each event's publisher is the module its name
    /// starts with.
    #[test]
    fn names_are_the_module_crates_own() {
        assert_eq!(ModuleName::User.as_str(), user::NAME);
        assert_eq!(ModuleName::Catalog.as_str(), catalog::NAME);
        assert_eq!(ModuleName::Inventory.as_str(), inventory::NAME);
        assert_eq!(ModuleName::Order.as_str(), order::NAME);
        assert_eq!(ModuleName::Payment.as_str(), payment::NAME);
        assert_eq!(ModuleName::Notification.as_str(), notification::NAME);
        assert_eq!(notification_api::NAME, notification::NAME);
        assert_eq!(COMPILED.len(), ModuleName::ALL.len());
        for module in ModuleName::ALL {
            assert!(registration(*module).is_some(), "{module:?}");
            for event in module.subscribes() {
                assert!(ModuleName::publisher_of(event).is_some(), "{event}");
            }
        }
    }
}
