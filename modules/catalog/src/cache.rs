//! The product cache: in process (moka) and, for several instances, Redis.
//!
//! Reads go through [`ProductCache::get_or_load`]: a hit is served from
//! memory, as a [`CachedProduct`] whose JSON and `ETag` were made when it
//! was loaded (a hit neither copies, serializes nor hashes the product); a
//! miss loads once per key at a time (moka's `try_get_with`
//! coalesces concurrent misses, so a popular product expiring does not
//! stampede the database). With Redis configured, the in-process layer
//! keeps entries only `local_ttl_secs` and falls back to Redis before the
//! database, so instances share what they load; invalidation deletes from
//! both. `cache_loads_total` counts the loads from the database. Writes
//! invalidate right after they commit; every other instance forgets its
//! copy when the database tells it (`crate::changes`: a trigger's NOTIFY;
//! the catalog's events reach one instance only on RabbitMQ). A load that
//! an invalidation overtook is not kept (`ProductCache::invalidations`),
//! and for a second past the writer's second delete from Redis a changed
//! product is loaded from the database, not Redis (`ProductCache::changed`:
//! the change's notification may come before the writer's delete).
//! Every Redis command is bounded by `redis_timeout_ms`, and after a failure
//! Redis is left alone for a second (`QUIET`): a Redis that stops
//! answering costs reads and the invalidating event handlers that much, and
//! an entry it kept lives out its TTL at most. The second delete of a
//! written product, a second later and off every path, is tried anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::http::header::HeaderValue;
use actix_web::web::Bytes;
use catalog_api::{CatalogError, Product, ProductId};
use kernel::Failure;
use redis::AsyncCommands as _;
use serde::Deserialize;

/// `[catalog.cache]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// `memory`, `redis` (memory in front of Redis) or `off`.
    pub backend: CacheBackend,
    /// How long an entry lives, seconds.
    pub ttl_secs: u64,
    /// Most products kept in memory.
    pub capacity: u64,
    /// Redis URL, for `backend = "redis"`.
    pub redis_url: String,
    /// With Redis, how long the in-process layer keeps an entry, seconds
    /// (bounds how stale another instance's copy can be).
    pub local_ttl_secs: u64,
    /// With Redis, the longest a command may take, reconnecting included,
    /// milliseconds. Past it the cache is skipped: a read goes to the
    /// database, and a write's invalidation gives up (its entry lives out
    /// its `ttl_secs` at most), so a Redis that stops answering holds up
    /// neither requests nor the events whose handlers invalidate.
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
}

fn default_redis_timeout_ms() -> u64 {
    250
}

/// Where cached products live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    /// This process's memory.
    Memory,
    /// Memory in front of a shared Redis.
    Redis,
    /// No cache.
    Off,
}

/// A product as reads are served: the value, and its representation made
/// once (the body of `GET /api/v1/products/{id}` and its `ETag`, the tag
/// the ETag middleware would compute from that body).
#[derive(Debug)]
pub struct CachedProduct {
    /// The product, for callers in this process.
    pub product: Product,
    /// Its JSON.
    pub json: Bytes,
    /// `web::etag::tag_of(&json)`.
    pub etag: HeaderValue,
}

impl CachedProduct {
    /// `product` with its JSON and tag.
    ///
    /// # Errors
    /// The product cannot be written as JSON (a bug: every field can).
    pub fn new(product: Product) -> Result<CachedProduct, CatalogError> {
        let json = serde_json::to_vec(&product)
            .map_err(|e| Failure::Unexpected(format!("product as JSON: {e}")))?;
        let etag = web::etag::tag_of(&json);
        Ok(CachedProduct {
            product,
            json: Bytes::from(json),
            etag,
        })
    }
}

/// Cached product reads.
#[derive(Clone)]
pub struct ProductCache {
    /// Each entry with its slot's invalidation count when its load began.
    local: Option<moka::future::Cache<ProductId, (Arc<CachedProduct>, u64)>>,
    redis: Option<Shared>,
    /// Invalidations so far, by slot of product id ([`SLOTS`]). moka keeps
    /// what a load returns even when its key was invalidated while the
    /// load ran: a read that began before a write commits and ends after
    /// its invalidation would keep the old row for the whole TTL (and a
    /// checkout would price from it). A load whose slot moved meanwhile
    /// is not served once that count moved ([`Self::get_or_load`]).
    invalidations: Arc<[AtomicU64; SLOTS]>,
    /// How long after a write's delete from Redis it is deleted again
    /// ([`Self::invalidate`]).
    second_delete: Duration,
    /// With Redis: the products changed within [`Self::second_delete`] and
    /// a second more, whose loads read the database, not Redis. A change's
    /// notification can reach this instance before the writer has deleted
    /// the product from Redis (it does so once its transaction commits),
    /// and an old copy may be written back there until the writer's second
    /// delete: a load that took it would keep it here, as new, for
    /// `local_ttl_secs` (and a checkout would price from it).
    changed: Option<moka::future::Cache<ProductId, ()>>,
}

/// The shared Redis behind the in-process layer.
#[derive(Clone)]
struct Shared {
    /// Set once Redis first answered: a Redis down when the shop starts
    /// leaves it empty (every command skipped, reads served from the
    /// database) until a task of its own connects ([`connect_later`]),
    /// rather than stop the start.
    connection: Arc<std::sync::OnceLock<redis::aio::ConnectionManager>>,
    /// How long entries live there.
    ttl: Duration,
    /// The longest a command may take (`redis_timeout_ms`).
    timeout: Duration,
    /// Until when Redis is left alone, after a command failed.
    quiet_until: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// How long Redis is left alone after a command failed or took too long:
/// while it does not answer, a batch of invalidations or a burst of misses
/// costs one [`Shared::timeout`], not one each.
const QUIET: Duration = Duration::from_secs(1);

/// Why a command was not done.
enum Missed {
    /// A command failed lately: Redis is left alone for [`QUIET`].
    Quiet,
    /// This command failed (and Redis is left alone for [`QUIET`]).
    Failed(String),
}

impl Shared {
    /// Runs a command with the connection, within [`Shared::timeout`]
    /// (waiting for a reconnection included: the connection manager's own
    /// retries are not bounded by its timeouts); not at all within
    /// [`QUIET`] of a failure.
    async fn run<T, F>(
        &self,
        command: impl FnOnce(redis::aio::ConnectionManager) -> F,
    ) -> Result<T, Missed>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let quiet = |until: Option<std::time::Instant>| {
            until.is_some_and(|until| std::time::Instant::now() < until)
        };
        if quiet(self.quiet_until.lock().map_or(None, |until| *until)) {
            return Err(Missed::Quiet);
        }
        self.run_anyway(command).await
    }

    /// [`Shared::run`] even within [`QUIET`] (still within the timeout):
    /// for the second delete of a written product, off every request's and
    /// handler's path, which is what keeps an old copy written back late (by
    /// a slow Redis, most likely) from being served until its TTL.
    async fn run_anyway<T, F>(
        &self,
        command: impl FnOnce(redis::aio::ConnectionManager) -> F,
    ) -> Result<T, Missed>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let Some(connection) = self.connection.get() else {
            return Err(Missed::Quiet);
        };
        let failure = match tokio::time::timeout(self.timeout, command(connection.clone())).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        if let Ok(mut until) = self.quiet_until.lock() {
            *until = Some(std::time::Instant::now() + QUIET);
        }
        Err(Missed::Failed(failure))
    }
}

/// Connects to Redis until it answers (every second, then less often, up to
/// every 30 s), and leaves the connection in `slot`. The connection
/// manager reconnects by itself from then on.
async fn connect_later(
    client: redis::Client,
    config: redis::aio::ConnectionManagerConfig,
    timeout: Duration,
    slot: Arc<std::sync::OnceLock<redis::aio::ConnectionManager>>,
) {
    // Off every request's path: an attempt may take longer than a command
    // (a TLS handshake, a Redis that is slow to come up).
    let timeout = timeout.max(Duration::from_secs(5));
    let mut wait = Duration::from_secs(1);
    for attempt in 1u64.. {
        tokio::time::sleep(wait).await;
        let connecting =
            redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone());
        match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(manager)) => {
                drop(slot.set(manager));
                tracing::info!("Redis reached: the product cache shares its entries again");
                return;
            }
            // Said again now and then, not at every attempt.
            Ok(Err(e)) if attempt % 10 == 0 => {
                tracing::warn!(error = %e, attempts = attempt, "Redis still cannot be reached");
            }
            Err(_) if attempt % 10 == 0 => {
                tracing::warn!(attempts = attempt, "Redis still does not answer");
            }
            _ => {}
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// [`ProductCache::invalidate`]'s second delete from Redis, this long after
/// the first: far longer than a change notification takes to reach the
/// other instances (milliseconds), far shorter than the entry's TTL.
const SECOND_DELETE: Duration = Duration::from_secs(1);

/// The set of products changed lately ([`ProductCache::changed`]): each
/// kept for `second_delete` and a second more. Not bounded by a capacity:
/// a bulk change of more products than the cache keeps must not lose
/// marks; what it holds is the writes of two seconds or so.
fn changed_window(second_delete: Duration) -> moka::future::Cache<ProductId, ()> {
    moka::future::Cache::builder()
        .time_to_live(second_delete + Duration::from_secs(1))
        .build()
}

/// Slots of [`ProductCache::invalidations`]: a write to one product makes a
/// concurrent load of another forget its result one time in this many.
const SLOTS: usize = 256;

fn key(id: ProductId) -> String {
    format!("shop:catalog:product:{id}")
}

impl ProductCache {
    /// A cache as `settings` say (connecting to Redis if asked: a Redis
    /// that does not answer within `redis_timeout_ms` is connected to
    /// later, by a task of its own, and skipped until then).
    ///
    /// # Errors
    /// An invalid Redis URL.
    pub async fn new(settings: &CacheSettings) -> anyhow::Result<ProductCache> {
        let ttl = Duration::from_secs(settings.ttl_secs.max(1));
        let local_ttl = match settings.backend {
            CacheBackend::Off => return Ok(ProductCache::off()),
            CacheBackend::Memory => ttl,
            CacheBackend::Redis => Duration::from_secs(settings.local_ttl_secs.max(1)),
        };
        let local = moka::future::Cache::builder()
            .max_capacity(settings.capacity)
            .time_to_live(local_ttl)
            .build();
        let second_delete = SECOND_DELETE;
        let redis = if settings.backend == CacheBackend::Redis {
            let client = redis::Client::open(settings.redis_url.as_str())?;
            let timeout = Duration::from_millis(settings.redis_timeout_ms.max(1));
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            let connection = Arc::new(std::sync::OnceLock::new());
            let first =
                redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone());
            match tokio::time::timeout(timeout, first).await {
                Ok(Ok(manager)) => {
                    drop(connection.set(manager));
                }
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {} ms", timeout.as_millis()),
                    };
                    tracing::warn!(error = %error, "Redis cannot be reached; products are read from the database until it can");
                    tokio::spawn(connect_later(
                        client,
                        config,
                        timeout,
                        Arc::clone(&connection),
                    ));
                }
            }
            Some(Shared {
                connection,
                ttl,
                timeout,
                quiet_until: Arc::default(),
            })
        } else {
            None
        };
        let changed = redis.as_ref().map(|_| changed_window(second_delete));
        Ok(ProductCache {
            local: Some(local),
            redis,
            invalidations: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
            second_delete,
            changed,
        })
    }

    /// No caching at all.
    pub fn off() -> ProductCache {
        ProductCache {
            local: None,
            redis: None,
            invalidations: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
            second_delete: SECOND_DELETE,
            changed: None,
        }
    }

    /// This cache, deleting a written product from Redis a second time
    /// `after` the first (tests; `SECOND_DELETE` otherwise).
    #[must_use]
    pub fn second_delete_after(mut self, after: Duration) -> ProductCache {
        self.second_delete = after;
        if self.changed.is_some() {
            self.changed = Some(changed_window(after));
        }
        self
    }

    /// The product with its representation, from the cache or from `load`
    /// (run once per key at a time).
    ///
    /// `load` makes the loading future only on a miss, which is boxed: a
    /// hit's future stays small (the loading one, with the database's and
    /// Redis's futures inside, is several times the size of the rest, and
    /// was made, moved and allocated on every read).
    ///
    /// An entry carries its slot's count of invalidations from when its
    /// load began; one served after that count moved (it was loaded before
    /// a write's invalidation: this read began after the write, or joined a
    /// load that straddled it, or hit the entry before that load forgot it)
    /// is dropped from memory, and the product is read past the cache.
    ///
    /// # Errors
    /// Whatever `load` fails with; failures are not cached.
    pub async fn get_or_load<L, F>(
        &self,
        id: ProductId,
        load: L,
    ) -> Result<Arc<CachedProduct>, CatalogError>
    where
        L: Fn() -> F,
        F: Future<Output = Result<Product, CatalogError>>,
    {
        let Some(local) = &self.local else {
            return Ok(Arc::new(CachedProduct::new(Box::pin(load()).await?)?));
        };
        let (product, stamp) = match local.get(&id).await {
            Some(hit) => {
                metrics::counter!("cache_requests_total", "cache" => "product", "result" => "hit")
                    .increment(1);
                hit
            }
            None => {
                metrics::counter!("cache_requests_total", "cache" => "product", "result" => "miss")
                    .increment(1);
                Box::pin(local.try_get_with(id, async {
                    // Read before the load begins: an invalidation after
                    // it means the load may hold the row as it was before
                    // that write.
                    let stamp = self.slot(id).load(Ordering::Acquire);
                    let changed = self.changed.as_ref().is_some_and(|c| c.contains_key(&id));
                    if !changed && let Some(product) = self.redis_get(id).await {
                        return Ok((Arc::new(CachedProduct::new(product)?), stamp));
                    }
                    metrics::counter!("cache_loads_total", "cache" => "product").increment(1);
                    let product = CachedProduct::new(load().await?)?;
                    if self.slot(id).load(Ordering::Acquire) == stamp {
                        self.redis_set(&product).await;
                    }
                    Ok((Arc::new(product), stamp))
                }))
                .await
                .map_err(|e: Arc<CatalogError>| (*e).clone())?
            }
        };
        if self.slot(id).load(Ordering::Acquire) == stamp {
            return Ok(product);
        }
        // Perhaps older than a write this read follows: not kept, not
        // served. (Redis is the writer's to clear; a write to another
        // product of the slot only costs this one load.)
        local.invalidate(&id).await;
        metrics::counter!("cache_loads_total", "cache" => "product").increment(1);
        Ok(Arc::new(CachedProduct::new(Box::pin(load()).await?)?))
    }

    fn slot(&self, id: ProductId) -> &AtomicU64 {
        // The low bits of a v7 id are random.
        let slot = (id.as_uuid().as_u128() % SLOTS as u128) as usize;
        &self.invalidations[slot]
    }

    /// Forgets this process's copy of a product (another instance changed
    /// it, and deleted it from Redis itself).
    pub async fn invalidate_here(&self, id: ProductId) {
        self.changed(id).await;
        self.slot(id).fetch_add(1, Ordering::AcqRel);
        if let Some(local) = &self.local {
            local.invalidate(&id).await;
        }
    }

    /// Marks `id` changed: its loads skip Redis for a while
    /// ([`Self::changed`]). Before the slot's count moves, so a load that
    /// reads the new count also finds the mark.
    async fn changed(&self, id: ProductId) {
        if let Some(changed) = &self.changed {
            changed.insert(id, ()).await;
        }
    }

    /// Forgets every product this process keeps (changes may have been
    /// missed: the notifications' connection was lost).
    pub fn invalidate_all_here(&self) {
        for slot in self.invalidations.iter() {
            slot.fetch_add(1, Ordering::AcqRel);
        }
        if let Some(local) = &self.local {
            local.invalidate_all();
        }
    }

    /// Forgets a product everywhere (after it changed), and deletes it
    /// from Redis once more a moment later: another instance whose load
    /// read the row before the write, and that had not yet heard of the
    /// change when the load ended, may have written its old copy back in
    /// between, which every instance would then serve until the TTL.
    pub async fn invalidate(&self, id: ProductId) {
        self.changed(id).await;
        self.slot(id).fetch_add(1, Ordering::AcqRel);
        self.forget(id).await;
        if let Some(redis) = &self.redis {
            let (redis, after) = (redis.clone(), self.second_delete);
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let deleted = redis
                    .run_anyway(|mut redis| async move { redis.del::<_, ()>(key(id)).await })
                    .await;
                if let Err(Missed::Failed(e)) = deleted {
                    tracing::warn!(error = %e, product.id = %id, "cannot invalidate the product in Redis again");
                }
            });
        }
    }

    /// Drops a product from this process's memory and from Redis.
    async fn forget(&self, id: ProductId) {
        if let Some(local) = &self.local {
            local.invalidate(&id).await;
        }
        if let Some(redis) = &self.redis {
            let deleted = redis
                .run(|mut redis| async move { redis.del::<_, ()>(key(id)).await })
                .await;
            match deleted {
                Ok(()) => {}
                Err(Missed::Failed(e)) => {
                    tracing::warn!(error = %e, product.id = %id, "cannot invalidate the product in Redis; its entry lives out its TTL at most");
                }
                Err(Missed::Quiet) => {
                    tracing::debug!(product.id = %id, "Redis left alone after a failure; its entry lives out its TTL at most");
                }
            }
        }
    }

    async fn redis_get(&self, id: ProductId) -> Option<Product> {
        let redis = self.redis.as_ref()?;
        let read = redis
            .run(|mut redis| async move { redis.get::<_, Option<String>>(key(id)).await })
            .await;
        match read {
            Ok(Some(json)) => serde_json::from_str(&json).ok(),
            Ok(None) => None,
            // Redis down: serve from the database rather than fail.
            Err(Missed::Failed(e)) => {
                tracing::warn!(error = %e, "Redis read failed; loading from the database");
                None
            }
            Err(Missed::Quiet) => None,
        }
    }

    async fn redis_set(&self, product: &CachedProduct) {
        let Some(redis) = &self.redis else {
            return;
        };
        let (key, ttl) = (key(product.product.id), redis.ttl.as_secs());
        let written =
            redis
                .run(|mut redis| async move {
                    redis.set_ex::<_, _, ()>(key, &product.json[..], ttl).await
                })
                .await;
        if let Err(Missed::Failed(e)) = written {
            tracing::warn!(error = %e, "Redis write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use catalog_api::{Availability, Sku};
    use kernel::{Currency, Money};

    fn product(id: ProductId, price_minor: i64) -> Product {
        let now = chrono::Utc::now();
        Product {
            id,
            sku: Sku::parse("RACE-1").unwrap(),
            name: "Race".into(),
            description: None,
            price: Money::new(price_minor, Currency::EUR),
            active: true,
            category_id: None,
            images: Vec::new(),
            attributes: serde_json::Map::new(),
            availability: Availability::InStock,
            created_at: now,
            updated_at: now,
        }
    }

    async fn memory() -> ProductCache {
        ProductCache::new(&CacheSettings {
            backend: CacheBackend::Memory,
            ttl_secs: 60,
            capacity: 100,
            redis_url: String::new(),
            local_ttl_secs: 5,
            redis_timeout_ms: 250,
        })
        .await
        .unwrap()
    }

    /// A read that loaded the row before a write committed, and finished
    /// after the write's invalidation, is not kept, nor served to a read
    /// that began after the write and joined that load: both get the row
    /// as the write left it (moka alone would keep the old one for the
    /// whole TTL, and hand it to whoever joined the load).
    #[tokio::test]
    async fn a_load_that_straddles_an_invalidation_is_not_kept() {
        use std::sync::Mutex;
        use std::sync::atomic::AtomicI64;
        let cache = memory().await;
        let id = ProductId::generate();
        // The database: the price, and a first read that waits to finish.
        let price = Arc::new(AtomicI64::new(100));
        let (read, has_read) = tokio::sync::oneshot::channel();
        let (finish, may_finish) = tokio::sync::oneshot::channel::<()>();
        let first = Arc::new(Mutex::new(Some((read, may_finish))));
        let reader = |cache: ProductCache| {
            let (price, first) = (price.clone(), first.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load(id, || {
                        let (price, first) = (price.clone(), first.clone());
                        async move {
                            let row = product(id, price.load(Ordering::SeqCst));
                            let gate = first.lock().unwrap().take();
                            if let Some((read, may_finish)) = gate {
                                read.send(()).unwrap();
                                drop(may_finish.await);
                            }
                            Ok(row)
                        }
                    })
                    .await
            })
        };
        let before = reader(cache.clone());
        has_read.await.unwrap();
        // The write commits (the price is now 200) and invalidates; a read
        // begun after it joins the load still running.
        price.store(200, Ordering::SeqCst);
        cache.invalidate(id).await;
        let after = reader(cache.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
        finish.send(()).unwrap();
        let got = after.await.unwrap().unwrap();
        assert_eq!(got.product.price.amount_minor(), 200, "the old row served");
        let got = before.await.unwrap().unwrap();
        assert_eq!(got.product.price.amount_minor(), 200);

        let next = reader(cache.clone()).await.unwrap().unwrap();
        assert_eq!(
            next.product.price.amount_minor(),
            200,
            "the old row was kept"
        );
        // And a load with no write beside it is kept.
        price.store(300, Ordering::SeqCst);
        let kept = reader(cache.clone()).await.unwrap().unwrap();
        assert_eq!(kept.product.price.amount_minor(), 200);
    }

    /// Two instances on one Redis, an old copy of a product in Redis. A
    /// write's notification reaches the other instance before the writer
    /// has deleted the product from Redis (it does so once its transaction
    /// has committed, as the notification is sent): a read there in
    /// between loads the product from the database, not the old copy from
    /// Redis, which it would keep in memory as new for `local_ttl_secs`.
    #[tokio::test]
    async fn a_product_changed_lately_is_not_loaded_from_redis() {
        let settings = CacheSettings {
            backend: CacheBackend::Redis,
            ttl_secs: 60,
            capacity: 100,
            redis_url: "redis://127.0.0.1:6379/".to_owned(),
            local_ttl_secs: 5,
            redis_timeout_ms: 250,
        };
        let writer = ProductCache::new(&settings).await.unwrap();
        let other = ProductCache::new(&settings).await.unwrap();
        let id = ProductId::generate();
        let old = other
            .get_or_load(id, || async move { Ok(product(id, 100)) })
            .await
            .unwrap();
        assert_eq!(old.product.price.amount_minor(), 100);
        // The row now costs 200; the other instance hears of it first.
        other.invalidate_here(id).await;
        let read = other
            .get_or_load(id, || async move { Ok(product(id, 200)) })
            .await
            .unwrap();
        assert_eq!(
            read.product.price.amount_minor(),
            200,
            "the old copy taken from Redis"
        );
        writer.invalidate(id).await;
        let again = other
            .get_or_load(id, || async move { Ok(product(id, 300)) })
            .await
            .unwrap();
        assert_eq!(again.product.price.amount_minor(), 200, "kept in memory");
    }

    /// Two instances on one Redis. The writer's deletes the product from
    /// Redis as its write commits; the other, whose load read the row
    /// before the write and had not yet heard of it (the change's
    /// notification still on its way), writes its old copy back just
    /// after. The writer deletes it once more a moment later, so the old
    /// copy is not what every instance serves until the TTL (a minute).
    #[tokio::test]
    async fn an_old_copy_written_back_to_redis_after_a_write_is_deleted_again() {
        use std::sync::Mutex;
        let settings = CacheSettings {
            backend: CacheBackend::Redis,
            ttl_secs: 60,
            capacity: 100,
            redis_url: "redis://127.0.0.1:6379/".to_owned(),
            local_ttl_secs: 5,
            redis_timeout_ms: 250,
        };
        let writer = ProductCache::new(&settings)
            .await
            .unwrap()
            .second_delete_after(Duration::from_secs(3));
        let other = ProductCache::new(&settings).await.unwrap();
        let id = ProductId::generate();
        let (read, has_read) = tokio::sync::oneshot::channel();
        let (finish, may_finish) = tokio::sync::oneshot::channel::<()>();
        let gate = Arc::new(Mutex::new(Some((read, may_finish))));
        let load = tokio::spawn(async move {
            other
                .get_or_load(id, || {
                    let gate = gate.clone();
                    async move {
                        let row = product(id, 100);
                        let gate = gate.lock().unwrap().take();
                        if let Some((read, may_finish)) = gate {
                            read.send(()).unwrap();
                            drop(may_finish.await);
                        }
                        Ok(row)
                    }
                })
                .await
        });
        has_read.await.unwrap();
        writer.invalidate(id).await;
        finish.send(()).unwrap();
        load.await.unwrap().unwrap();

        let client = redis::Client::open(settings.redis_url.as_str()).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        let stored = |mut redis: redis::aio::MultiplexedConnection| async move {
            redis::cmd("GET")
                .arg(key(id))
                .query_async::<Option<String>>(&mut redis)
                .await
                .unwrap()
        };
        assert!(
            stored(redis.clone()).await.is_some(),
            "the old copy is back in Redis"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while stored(redis.clone()).await.is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the old copy stayed in Redis"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let fresh = writer
            .get_or_load(id, || async move { Ok(product(id, 200)) })
            .await
            .unwrap();
        assert_eq!(fresh.product.price.amount_minor(), 200);
        let _: () = redis::cmd("DEL")
            .arg(key(id))
            .query_async(&mut redis)
            .await
            .unwrap();
    }
}
