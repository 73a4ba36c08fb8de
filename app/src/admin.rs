//! Administration tasks run from the command line.

use anyhow::Context as _;
use user_api::{NewUser, User, UserError};

use crate::database::{self, DatabaseServer};
use crate::modules::ModuleName;
use crate::{Settings, compose};
use kernel::Failure;

/// Creates an admin account in the user module's database (migrating it
/// first when `database.migrate_on_start` is on).
///
/// # Errors
/// The user module not local here, database trouble, or a refused account
/// (taken email, weak password), with the reason.
pub async fn create_admin(
    settings: &Settings,
    email: String,
    password: String,
    display_name: String,
) -> anyhow::Result<User> {
    anyhow::ensure!(
        settings.modules.is_local(ModuleName::User),
        "the user module does not run in this process (modules.enabled / modules.user.mode): \
         run this command where it does"
    );
    let server = DatabaseServer::resolve(settings).await?;
    let result = async {
        let url = settings.module_database_url(ModuleName::User, &server.url);
        if settings.database.migrate_on_start {
            db::migrate(url, user::MODULE_MIGRATIONS).await?;
        }
        let pool = database::module_pool(settings, ModuleName::User, &server.url)?;
        let users = user::module(settings, pool, compose::signing_key(settings)?)?;
        let new = NewUser {
            email,
            password,
            display_name,
        };
        users.create_admin(new).await.map_err(|e| match e {
            UserError::Common(Failure::Validation(errors)) => anyhow::anyhow!(
                "{}",
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            other => anyhow::anyhow!(other),
        })
    }
    .await
    .context("cannot create the admin account");
    server.shutdown().await;
    result
}
