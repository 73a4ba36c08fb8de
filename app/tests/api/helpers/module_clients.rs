//! A module's HTTP client, as the shop's other modules would build it.

use std::sync::Arc;

/// The HTTP client of a module made with `new` (such as
/// `CatalogClient::new`), aimed at `address` with the default policy of
/// `dependency`.
pub fn module_client<C>(
    address: &str,
    dependency: &str,
    new: impl FnOnce(reqwest::Client, url::Url, Arc<resilience::Policy>) -> C,
) -> Arc<C> {
    Arc::new(new(
        super::http(),
        url::Url::parse(address).unwrap(),
        super::policy(dependency),
    ))
}

/// Defines `async fn over_http()` for a module's contract suite: a `Harness`
/// (the module's, in scope where this is used) of its HTTP client, made with
/// `$new` (such as `CatalogClient::new`), talking to a real server over a
/// fresh database, with an admin's and a customer's tokens.
macro_rules! contract_over_http {
    ($dependency:literal, $new:expr) => {
        /// The HTTP client talking to a real server over a fresh database.
        async fn over_http() -> (Harness, crate::helpers::TestApp) {
            let app = crate::helpers::spawn_app().await;
            let api = crate::helpers::module_client(&app.address, $dependency, $new);
            let (admin, customer) = crate::helpers::bearer_contexts(&app);
            let harness = Harness {
                api,
                admin,
                customer,
            };
            (harness, app)
        }
    };
}

pub(crate) use contract_over_http;
