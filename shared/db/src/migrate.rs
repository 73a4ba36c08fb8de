//! Per-module migrations, each module's history in its own schema.

use diesel::connection::SimpleConnection as _;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness as _};

/// A module's schema and the migrations embedded from `migrations/<schema>/`.
#[derive(Clone, Copy)]
pub struct ModuleMigrations {
    /// Schema the module owns; its migration history lives there too.
    pub schema: &'static str,
    /// The module's migrations.
    pub migrations: &'static EmbeddedMigrations,
}

impl std::fmt::Debug for ModuleMigrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleMigrations")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// The messaging tables (`outbox`, `inbox`, `dead_letters`) every module
/// schema holds, embedded from `migrations/_messaging/`.
static MESSAGING: EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../../migrations/_messaging");

/// Applies the module's pending migrations on a dedicated connection whose
/// `search_path` is the module's schema, so the tables and
/// `__diesel_schema_migrations` land there: first the messaging tables every
/// module has, then the module's own, under an advisory lock per schema
/// (several processes may migrate at once: one applies, the others wait).
/// Returns the versions applied.
///
/// # Errors
/// Connection or migration failures, with the module named.
pub async fn migrate(url: &str, module: ModuleMigrations) -> anyhow::Result<Vec<String>> {
    let url = url.to_owned();
    let ModuleMigrations { schema, migrations } = module;
    let versions = |source: &'static EmbeddedMigrations| -> anyhow::Result<Vec<String>> {
        Ok(Source(source)
            .migrations()
            .map_err(|e| anyhow::anyhow!("migrations of `{schema}` cannot be read: {e}"))?
            .iter()
            .map(|m| m.name().version().to_string())
            .collect())
    };
    let shared = clashes(&versions(&MESSAGING)?, &versions(migrations)?);
    anyhow::ensure!(
        shared.is_empty(),
        "migrations of `{schema}` have the versions of messaging migrations ({}): both are \
         recorded in `{schema}`'s one history, so one of each pair would never run; rename the \
         module's",
        shared.join(", ")
    );
    // diesel's migration harness is synchronous; run it off the async workers.
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut conn: AsyncConnectionWrapper<AsyncPgConnection> =
            diesel::Connection::establish(&url)
                .map_err(|e| anyhow::anyhow!("cannot connect to migrate `{schema}`: {e}"))?;
        // Under a lock per schema, held until this connection closes:
        // replicas starting together on a release with new migrations
        // would otherwise race on `CREATE SCHEMA` and on each migration,
        // and all but one fail their start. The others wait, then find
        // nothing pending. They wait between tries, not in a statement:
        // a statement waiting holds a snapshot, which a future `CREATE
        // INDEX CONCURRENTLY` of the holder's would wait for (a deadlock).
        lock_schema(&mut conn, schema)?;
        conn.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}"
        ))
        .map_err(|e| anyhow::anyhow!("cannot prepare schema `{schema}`: {e}"))?;
        let mut applied = Vec::new();
        for source in [&MESSAGING, migrations] {
            let versions = conn
                .run_pending_migrations(Source(source))
                .map_err(|e| anyhow::anyhow!("migrations of `{schema}` failed: {e}"))?;
            applied.extend(versions.iter().map(ToString::to_string));
        }
        warn_unless_english(&mut conn, schema);
        Ok(applied)
    })
    .await?
}

/// Warns when the server writes its messages in another language than
/// English: PostgreSQL's SQLSTATE does not reach the shop (diesel-async
/// keeps only the message), so a deadlock or a statement timeout is told
/// by its English words (`pool::query_failure`), and in another language it
/// is answered 500 where 503 (try again) is meant.
fn warn_unless_english(conn: &mut AsyncConnectionWrapper<AsyncPgConnection>, schema: &str) {
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        lc_messages: String,
    }
    let query = diesel::sql_query("SHOW lc_messages");
    match diesel::RunQueryDsl::get_result::<Setting>(query, conn) {
        Ok(Setting { lc_messages }) if !english_messages(&lc_messages) => tracing::warn!(
            schema,
            lc_messages,
            "the database writes its messages in another language: deadlocks and statement \
             timeouts will be answered 500 instead of 503; set them in English for the shop's \
             role (as a superuser: ALTER ROLE <role> SET lc_messages = 'C')"
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!(schema, error = %e, "cannot read lc_messages"),
    }
}

/// Whether messages under the locale `lc_messages` are PostgreSQL's own
/// English ones: the C and POSIX locales, an English one, or none named
/// (the server's environment, usually C in its container).
fn english_messages(lc_messages: &str) -> bool {
    let name = lc_messages.trim();
    name.is_empty()
        || name == "POSIX"
        || name == "C"
        || name.starts_with("C.")
        || name.starts_with("en_")
        || name == "en"
        || name.starts_with("en.")
        || name.starts_with("English")
}

/// Takes the advisory lock of `schema`'s migrations on `conn` (held until
/// it closes), trying every 100 ms for up to 15 minutes.
fn lock_schema(
    conn: &mut AsyncConnectionWrapper<AsyncPgConnection>,
    schema: &str,
) -> anyhow::Result<()> {
    #[derive(diesel::QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15 * 60);
    loop {
        // Raw: an advisory lock, which diesel has no DSL for.
        let query = diesel::sql_query(
            "SELECT pg_try_advisory_lock(hashtext('shop.migrate.' || $1)) AS locked",
        )
        .bind::<diesel::sql_types::Text, _>(schema);
        let Locked { locked } = diesel::RunQueryDsl::get_result(query, conn)
            .map_err(|e| anyhow::anyhow!("cannot lock the migrations of `{schema}`: {e}"))?;
        if locked {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the migrations of `{schema}` stayed locked by another process for 15 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The versions `ours` and `theirs` share, in `theirs`' order.
fn clashes(ours: &[String], theirs: &[String]) -> Vec<String> {
    theirs
        .iter()
        .filter(|v| ours.contains(v))
        .cloned()
        .collect()
}

/// Lends a `'static` embedded migration set to the harness, which wants a
/// source by value.
struct Source(&'static EmbeddedMigrations);

impl MigrationSource<Pg> for Source {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn Migration<Pg>>>> {
        self.0.migrations()
    }
}

/// Creates database `name` on the server of `admin_url` unless it exists.
///
/// # Errors
/// Connection failures, or `name` not a plain identifier.
pub async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "invalid database name `{name}`"
    );
    let mut conn = AsyncPgConnection::establish(admin_url).await?;
    #[derive(diesel::QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    // Raw: the server's catalog and DDL, which diesel has no tables for.
    let found: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<diesel::sql_types::Text, _>(name)
            .get_result(&mut conn)
            .await?;
    if !found.exists {
        diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}

/// Declares a module's embedded migrations, `MIGRATIONS` (from `$dir`,
/// relative to the module crate), and `MODULE_MIGRATIONS`, them with the
/// module's `$schema`: what `shop migrate`, the composition root and the
/// test template read. The crate needs `diesel_migrations` beside `db`.
#[macro_export]
macro_rules! module_migrations {
    ($schema:expr, $dir:literal) => {
        /// The module's migrations, embedded from its folder of `migrations/`.
        pub static MIGRATIONS: $crate::EmbeddedMigrations =
            diesel_migrations::embed_migrations!($dir);

        /// The module's schema and migrations, for `shop migrate` and the tests.
        pub const MODULE_MIGRATIONS: $crate::ModuleMigrations = $crate::ModuleMigrations {
            schema: $schema,
            migrations: &MIGRATIONS,
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The locales whose messages `pool::query_failure` can read.
    #[test]
    fn english_messages_are_those_of_c_posix_and_english_locales() {
        for english in [
            "C",
            "C.UTF-8",
            "POSIX",
            "en_US.UTF-8",
            "en_GB.utf8",
            "",
            "English_United States.1252",
        ] {
            assert!(english_messages(english), "{english}");
        }
        for other in ["de_DE.UTF-8", "fr_FR.utf8", "ja_JP.UTF-8", "es", "Chinese"] {
            assert!(!english_messages(other), "{other}");
        }
    }

    #[test]
    fn a_module_version_equal_to_a_messaging_one_is_a_clash() {
        let messaging = ["20000101000001".to_owned(), "20261206900001".to_owned()];
        let module = [
            "20261126000001".to_owned(),
            "20261206900001".to_owned(),
            "20261206000001".to_owned(),
        ];
        assert_eq!(clashes(&messaging, &module), ["20261206900001"]);
        assert!(clashes(&messaging, &module[..1]).is_empty());
    }
}
