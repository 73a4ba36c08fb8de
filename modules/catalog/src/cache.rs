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
//! both. `cache_loads_total` counts the loads from the database. Writes invalidate right after they commit, and the catalog's own
//! events invalidate again (for other instances and for the read model).

use std::sync::Arc;
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
    local: Option<moka::future::Cache<ProductId, Arc<CachedProduct>>>,
    redis: Option<(redis::aio::ConnectionManager, Duration)>,
}

fn key(id: ProductId) -> String {
    format!("shop:catalog:product:{id}")
}

impl ProductCache {
    /// A cache as `settings` say (connecting to Redis if asked).
    ///
    /// # Errors
    /// An unreachable or invalid Redis URL.
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
        let redis = if settings.backend == CacheBackend::Redis {
            let client = redis::Client::open(settings.redis_url.as_str())?;
            let manager = redis::aio::ConnectionManager::new(client).await?;
            Some((manager, ttl))
        } else {
            None
        };
        Ok(ProductCache {
            local: Some(local),
            redis,
        })
    }

    /// No caching at all.
    pub fn off() -> ProductCache {
        ProductCache {
            local: None,
            redis: None,
        }
    }

    /// The product with its representation, from the cache or from `load`
    /// (run once per key at a time).
    ///
    /// `load` makes the loading future only on a miss, which is boxed: a
    /// hit's future stays small (the loading one, with the database's and
    /// Redis's futures inside, is several times the size of the rest, and
    /// was made, moved and allocated on every read).
    ///
    /// # Errors
    /// Whatever `load` fails with; failures are not cached.
    pub async fn get_or_load<L, F>(
        &self,
        id: ProductId,
        load: L,
    ) -> Result<Arc<CachedProduct>, CatalogError>
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<Product, CatalogError>>,
    {
        let Some(local) = &self.local else {
            return Ok(Arc::new(CachedProduct::new(Box::pin(load()).await?)?));
        };
        if let Some(product) = local.get(&id).await {
            metrics::counter!("cache_requests_total", "cache" => "product", "result" => "hit")
                .increment(1);
            return Ok(product);
        }
        metrics::counter!("cache_requests_total", "cache" => "product", "result" => "miss")
            .increment(1);
        Box::pin(local.try_get_with(id, async {
            if let Some(product) = self.redis_get(id).await {
                return Ok(Arc::new(CachedProduct::new(product)?));
            }
            metrics::counter!("cache_loads_total", "cache" => "product").increment(1);
            let product = CachedProduct::new(load().await?)?;
            self.redis_set(&product).await;
            Ok(Arc::new(product))
        }))
        .await
        .map_err(|e: Arc<CatalogError>| (*e).clone())
    }

    /// Forgets this process's copy of a product (another instance changed
    /// it, and deleted it from Redis itself).
    pub async fn invalidate_here(&self, id: ProductId) {
        if let Some(local) = &self.local {
            local.invalidate(&id).await;
        }
    }

    /// Forgets every product this process keeps (changes may have been
    /// missed: the notifications' connection was lost).
    pub fn invalidate_all_here(&self) {
        if let Some(local) = &self.local {
            local.invalidate_all();
        }
    }

    /// Forgets a product everywhere (after it changed).
    pub async fn invalidate(&self, id: ProductId) {
        if let Some(local) = &self.local {
            local.invalidate(&id).await;
        }
        if let Some((redis, _)) = &self.redis {
            let mut redis = redis.clone();
            if let Err(e) = redis.del::<_, ()>(key(id)).await {
                tracing::warn!(error = %e, product.id = %id, "cannot invalidate the product in Redis");
            }
        }
    }

    async fn redis_get(&self, id: ProductId) -> Option<Product> {
        let (redis, _) = self.redis.as_ref()?;
        let mut redis = redis.clone();
        match redis.get::<_, Option<String>>(key(id)).await {
            Ok(Some(json)) => serde_json::from_str(&json).ok(),
            Ok(None) => None,
            Err(e) => {
                // Redis down: serve from the database rather than fail.
                tracing::warn!(error = %e, "Redis read failed; loading from the database");
                None
            }
        }
    }

    async fn redis_set(&self, product: &CachedProduct) {
        let Some((redis, ttl)) = &self.redis else {
            return;
        };
        let mut redis = redis.clone();
        if let Err(e) = redis
            .set_ex::<_, _, ()>(key(product.product.id), &product.json[..], ttl.as_secs())
            .await
        {
            tracing::warn!(error = %e, "Redis write failed");
        }
    }
}
