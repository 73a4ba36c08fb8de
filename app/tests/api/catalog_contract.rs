//! The catalog contract suite, run against both implementations of `CatalogApi`.

use std::sync::Arc;

use catalog_api::CatalogApi;
use catalog_api::client::CatalogClient;
use catalog_api::contract::Harness;
use kernel::{Failure, Role};

use crate::helpers::{caller, contract_over_http, module_client, test_database};

/// The in-process module over a fresh database.
async fn in_process() -> (Harness, testkit::TestDatabase) {
    let db = test_database().await;
    let settings = crate::helpers::test_settings(Some(db.url()), &[]);
    let pool =
        app::database::module_pool(&settings, app::modules::ModuleName::Catalog, db.url()).unwrap();
    let section = settings.section::<catalog::Settings>().unwrap();
    let cache = catalog::ProductCache::new(&section.cache).await.unwrap();
    let searches = catalog::Searches::new(&section.search);
    let harness = Harness {
        api: Arc::new(catalog::CatalogModule::new(pool, cache, searches)),
        admin: caller(Role::Admin),
        customer: caller(Role::Customer),
    };
    (harness, db)
}

contract_over_http!("catalog", CatalogClient::new);

mod local {
    catalog_api::catalog_contract_suite!(super::in_process);
}

mod http {
    catalog_api::catalog_contract_suite!(super::over_http);
}

/// The client turns transport failures into `Unavailable`, not a panic or `Unexpected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reports_an_unreachable_catalog_as_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = module_client(&address, "catalog", CatalogClient::new);
    let err = client
        .get_product(
            &kernel::CallContext::background(),
            catalog_api::ProductId::generate(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            catalog_api::CatalogError::Common(Failure::Unavailable(_))
        ),
        "{err:?}"
    );
}
