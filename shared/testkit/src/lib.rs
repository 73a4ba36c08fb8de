//! Test harness: a fresh PostgreSQL database per test, cloned from a
//! migrated template.
//!
//! The server is found the way `cargo run` finds one: `DATABASE_URL` when
//! set (any database on the server; the harness creates its own), otherwise
//! a private throwaway cluster in `$TMPDIR/shop-test-pg-<checkout hash>`,
//! started from the machine's PostgreSQL binaries with fsync off and left
//! running for the next run (`scripts/stop-test-db` stops it). It lives in
//! the temp directory, not `target/`, because as root the server runs as the
//! `postgres` user, who may not be able to enter a checkout under a private
//! home directory.
//!
//! The template `shop_tpl_<hash>` is migrated once per set of migrations
//! (the hash covers every file under `migrations/`), under an advisory lock
//! so that parallel test processes (nextest runs one per test) build it only
//! once. Each [`TestDatabase`] is `CREATE DATABASE ... TEMPLATE` of it and is
//! dropped again (`WITH (FORCE)`) when the value is dropped.

// Test support: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fault;
pub mod smtp;
pub mod tls;

use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use db::ModuleMigrations;
use db::embedded::{EmbeddedOptions, EmbeddedPostgres};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tokio::sync::OnceCell;

/// A database of its own for one test, dropped with this value.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// A fresh database with every module of `modules` migrated.
    pub async fn create(modules: &[ModuleMigrations]) -> TestDatabase {
        let admin_url = admin_url().await;
        let template = template(&admin_url, modules).await;
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = connect(&admin_url).await;
        execute(
            &mut conn,
            &format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        TestDatabase {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        }
    }

    /// URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Name of this database.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop may run inside or outside a runtime: use a thread of our own.
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping a test database");
            runtime.block_on(async {
                let mut conn = connect(&admin_url).await;
                execute(&mut conn, &sql).await
            })
        })
        .join();
        if let Ok(Err(e)) = outcome {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

/// URL of the server's `postgres` database, resolved once per process.
pub async fn admin_url() -> String {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_init(|| async {
        match std::env::var("DATABASE_URL") {
            Ok(url) => with_database(&url, "postgres"),
            Err(_) => tokio::task::spawn_blocking(start_private_cluster)
                .await
                .expect("starting the test cluster panicked"),
        }
    })
    .await
    .clone()
}

/// A directory of this checkout's own under the system temp directory,
/// reachable by the `postgres` user (for embedded servers in tests).
pub fn scratch_dir(name: &str) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    workspace_root()
        .canonicalize()
        .unwrap_or_else(|_| workspace_root())
        .hash(&mut hasher);
    std::env::temp_dir().join(format!("{name}-{:08x}", hasher.finish() as u32))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Starts (or attaches to) the shared throwaway cluster, one process at a
/// time (a file lock; the loser then finds it running).
fn start_private_cluster() -> String {
    let data_dir = scratch_dir("shop-test-pg");
    let lock = std::fs::File::create(data_dir.with_extension("lock")).expect("create lock file");
    lock.lock().expect("lock the test cluster");
    let server = EmbeddedPostgres::start(&EmbeddedOptions {
        data_dir,
        durable: false,
        port: None,
    })
    .unwrap_or_else(|e| panic!("no database for tests: {e}"));
    let url = server.url("postgres");
    // Deliberately not stopped: the next test process (and the next run) reuses it.
    std::mem::forget(server);
    drop(lock);
    url
}

/// The migrated template for `modules`, built once under an advisory lock.
async fn template(admin_url: &str, modules: &[ModuleMigrations]) -> String {
    let name = format!("shop_tpl_{:016x}", migrations_hash(modules));
    let mut conn = connect(admin_url).await;
    // Any constant: every test process of this project takes the same lock.
    execute(&mut conn, "SELECT pg_advisory_lock(7262930)")
        .await
        .unwrap();
    if !database_exists(&mut conn, &name).await {
        let building = format!("{name}_building");
        execute(
            &mut conn,
            &format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"),
        )
        .await
        .unwrap();
        execute(&mut conn, &format!("CREATE DATABASE \"{building}\""))
            .await
            .unwrap();
        let url = with_database(admin_url, &building);
        for module in modules {
            db::migrate(&url, *module)
                .await
                .unwrap_or_else(|e| panic!("template migration failed: {e:#}"));
        }
        // The migration connections may take a moment to go away.
        let rename = format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\"");
        let mut attempts = 0;
        while let Err(e) = execute(&mut conn, &rename).await {
            attempts += 1;
            assert!(attempts < 50, "cannot finish template {name}: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop_stale_templates(&mut conn, &name).await;
    }
    execute(&mut conn, "SELECT pg_advisory_unlock(7262930)")
        .await
        .unwrap();
    name
}

/// Templates of older migration sets are of no further use.
async fn drop_stale_templates(conn: &mut AsyncPgConnection, keep: &str) {
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    // Raw (test support): the server's catalog and DDL, no tables.
    let stale: Vec<Name> = diesel::sql_query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'shop\\_tpl\\_%' AND datname <> $1",
    )
    .bind::<diesel::sql_types::Text, _>(keep)
    .load(conn)
    .await
    .unwrap_or_default();
    for Name { datname } in stale {
        drop(
            execute(
                conn,
                &format!("DROP DATABASE IF EXISTS \"{datname}\" WITH (FORCE)"),
            )
            .await,
        );
    }
}

/// Hash of the schemas and of every file under `migrations/`, so a changed
/// migration gets a new template.
fn migrations_hash(modules: &[ModuleMigrations]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for module in modules {
        module.schema.hash(&mut hasher);
    }
    let mut files = Vec::new();
    collect_files(&workspace_root().join("migrations"), &mut files);
    files.sort();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file).unwrap_or_default().hash(&mut hasher);
    }
    hasher.finish()
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result::<Exists>(conn)
        .await
        .map(|e| e.exists)
        .unwrap()
}

async fn connect(url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server: {e}"))
}

async fn execute(conn: &mut AsyncPgConnection, sql: &str) -> diesel::QueryResult<usize> {
    diesel::sql_query(sql).execute(conn).await
}

/// `url` with its database (path) replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("DATABASE_URL: {e}"));
    parsed.set_path(&format!("/{database}"));
    parsed.to_string()
}
