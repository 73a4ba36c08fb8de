//! Per-module pools and per-schema migration history.

use diesel_async::RunQueryDsl;

use crate::helpers::{test_database, test_settings};

#[derive(diesel::QueryableByName, Debug)]
struct Settings {
    #[diesel(sql_type = diesel::sql_types::Text)]
    search_path: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    statement_timeout: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    application_name: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_connections_carry_schema_timeout_and_name() {
    let db = test_database().await;
    let settings = test_settings(
        Some(db.url()),
        &[("APP__DATABASE__STATEMENT_TIMEOUT_MS", "1234")],
    );
    let pool =
        app::database::module_pool(&settings, app::modules::ModuleName::Catalog, db.url()).unwrap();
    let mut conn = pool.get().await.unwrap();

    let got: Settings = diesel::sql_query(
        "SELECT current_setting('search_path') AS search_path, \
                current_setting('statement_timeout') AS statement_timeout, \
                current_setting('application_name') AS application_name",
    )
    .get_result(&mut conn)
    .await
    .unwrap();

    assert_eq!(got.search_path, "catalog");
    assert_eq!(got.statement_timeout, "1234ms");
    assert_eq!(got.application_name, "shop/catalog");
}

#[derive(diesel::QueryableByName)]
struct Version {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_history_lives_in_the_module_schema_and_reruns_are_no_ops() {
    let db = test_database().await;
    let mut conn = {
        use diesel_async::AsyncConnection as _;
        diesel_async::AsyncPgConnection::establish(db.url())
            .await
            .unwrap()
    };
    let versions: Vec<Version> =
        diesel::sql_query("SELECT version FROM catalog.__diesel_schema_migrations")
            .load(&mut conn)
            .await
            .unwrap();
    assert!(
        versions.iter().any(|v| v.version == "20261126000001"),
        "catalog history in catalog schema"
    );
    let public: Vec<Version> = diesel::sql_query(
        "SELECT table_name AS version FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let public: Vec<&str> = public.iter().map(|t| t.version.as_str()).collect();
    assert!(public.is_empty(), "nothing lands in public: {public:?}");

    let applied = db::migrate(db.url(), catalog::MODULE_MIGRATIONS)
        .await
        .unwrap();
    assert!(applied.is_empty(), "already migrated: {applied:?}");
}
