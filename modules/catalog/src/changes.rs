//! Cached products follow changes made by any instance. A trigger on
//! `products` (migration `2026-12-06-000004_product_changes`) notifies
//! [`CHANNEL`] with a changed product's id in the writer's transaction,
//! delivered when it commits; every instance listens on a connection of its
//! own and forgets its copy. So a price or an `active` flag changed on one
//! instance is not served stale by another for the cache's lifetime. (The
//! catalog's events cannot carry this: on RabbitMQ one instance of a module
//! receives each event, and the inbox would skip it for the others.)

use std::time::Duration;

use catalog_api::ProductId;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, SimpleAsyncConnection as _};
use futures_util::StreamExt as _;
use tokio::sync::watch;

use crate::ProductCache;

/// The channel the trigger notifies.
pub(crate) const CHANNEL: &str = "shop_catalog_products";

/// A connection listening on [`CHANNEL`] at `url`: made before the module
/// serves, so no change can fall between its first read and the first
/// notification.
///
/// # Errors
/// The database cannot be reached, or refuses `LISTEN`.
pub(crate) async fn listen(url: &str) -> anyhow::Result<AsyncPgConnection> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    conn.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(conn)
}

/// Forgets each product announced on `conn` (or on a connection made at
/// `url` when there is none yet) until `stop` turns true. While no
/// connection listens, changes may be missed: when one is lost, every copy
/// is forgotten, and again once another listens at `url`.
pub(crate) async fn follow(
    listening: Option<AsyncPgConnection>,
    url: String,
    cache: ProductCache,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = listening;
    loop {
        let mut conn = match next.take() {
            Some(conn) => conn,
            None => loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                let connected = tokio::select! {
                    connected = listen(&url) => connected,
                    _ = stop.changed() => return,
                };
                match connected {
                    Ok(conn) => {
                        cache.invalidate_all_here();
                        break conn;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot follow product changes yet"),
                }
            },
        };
        {
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            loop {
                tokio::select! {
                    notification = notifications.next() => {
                        let Some(Ok(notification)) = notification else { break };
                        match notification.payload.parse::<uuid::Uuid>() {
                            Ok(id) => cache.invalidate_here(ProductId::from(id)).await,
                            Err(_) => cache.invalidate_all_here(),
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        }
        tracing::warn!("the product changes' connection was lost; reconnecting");
        cache.invalidate_all_here();
    }
}
