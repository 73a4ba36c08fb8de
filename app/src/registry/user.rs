//! The user module: accounts and sign-in; it holds the keys that sign and
//! verify access tokens, and prunes expired refresh tokens in the background.

use std::time::Duration;

use actix_web::web::{self as aweb, Data};
use futures_util::future::BoxFuture;

use super::{Context, Local, Registration};
use crate::modules::ModuleName;
use crate::{Settings, compose};

pub(super) const REGISTRATION: Registration = Registration {
    module: ModuleName::User,
    migrations: user::MODULE_MIGRATIONS,
    routes: user::http::configure,
    database,
    gauges: None,
    build,
};

fn database(settings: &Settings) -> &db::ModuleDatabase {
    &settings.user.database
}

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let settings = cx.settings;
        let key = compose::signing_key(settings)?;
        let keys = compose::key_set(settings, &key)?;
        let users = compose::user_module(settings, cx.pool, key)?;
        let retention = user::RetentionJob::new(
            users.clone(),
            Duration::from_secs(settings.user.prune_interval_secs),
        );
        let limits = &settings.rate_limit;
        let limits = Data::new(user::http::Limits::new(
            limits.trusted_proxies.clone(),
            limits.per_minute(limits.login_per_minute_per_ip),
            limits.per_minute(limits.login_per_minute_per_account),
            limits.per_minute(limits.registrations_per_minute_per_ip),
        ));
        let users = Data::new(users);
        let mut local =
            Local::with_data(std::sync::Arc::new(move |cfg: &mut aweb::ServiceConfig| {
                cfg.app_data(users.clone()).app_data(limits.clone());
            }))
            .job(tokio::spawn(retention.run(cx.stopped.clone())));
        local.keys = Some(keys);
        Ok(local)
    })
}
