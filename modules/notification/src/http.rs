//! `/notifications` and `/admin/webhooks` routes.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Json, Path, Query};
use actix_web::{HttpResponse, delete, get, post};
use auth::{AdminOnly, Authenticated};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use kernel::{Cursor, Page, ProblemBody, Role};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use web::{PageQuery, Problem};

use crate::repo;

/// The module's state for its routes.
#[derive(Clone)]
pub struct NotificationModule {
    pool: db::Pool,
    egress: crate::egress::Egress,
    /// Webhook subscriptions beyond which a creation is refused
    /// (`notification.max_webhooks`).
    max_webhooks: u32,
}

impl NotificationModule {
    /// Routes over the module's pool; webhook URLs must satisfy `egress`,
    /// and no subscription is created once `max_webhooks` exist.
    pub fn new(
        pool: db::Pool,
        egress: crate::egress::Egress,
        max_webhooks: u32,
    ) -> NotificationModule {
        NotificationModule {
            pool,
            egress,
            max_webhooks,
        }
    }

    async fn conn(&self) -> Result<db::Object, Problem> {
        db::connection(&self.pool, crate::NAME).await.map_err(|e| {
            tracing::warn!(error = %e, "notification database unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "notification_unavailable",
                "notifications cannot be read now",
            )
        })
    }
}

/// A failed query: 503 when the database cannot answer now (a lost
/// connection, the statement timeout), like every module; 500 otherwise.
fn database(e: diesel::result::Error) -> Problem {
    if let Some(reason) = db::unavailable_reason(&e) {
        tracing::warn!(error = %e, "notification database unavailable");
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "notification_unavailable",
            format!("the notification database {reason}"),
        )
        .with_retry_after(1);
    }
    tracing::error!(error = %e, "notification query failed");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "an unexpected error occurred; quote the request id when reporting it",
    )
}

/// Registers the routes (relative to `/api/v1`).
pub fn configure(cfg: &mut web::Routes<'_, '_>) {
    cfg.service(list_notifications)
        .service(create_webhook)
        .service(list_webhooks)
        .service(get_webhook)
        .service(delete_webhook);
}

/// A message the shop sent or is sending.
#[derive(Debug, Serialize, ToSchema, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = crate::repo::notifications)]
pub struct Notification {
    /// Notification id.
    id: Uuid,
    /// The event that caused it.
    event_type: String,
    /// The account it is for; `null` for the admin channel and webhooks.
    recipient_user_id: Option<Uuid>,
    /// `email` or `webhook`.
    channel: String,
    /// Email address or webhook URL.
    destination: String,
    /// Subject (email) or event type (webhook).
    subject: String,
    /// `pending`, `sent` or `failed`; `held`: an order update waiting for
    /// its customer's registration to reach the notification module (no
    /// address yet), then `pending`.
    status: String,
    /// Delivery attempts so far.
    attempts: i32,
    /// Why the last attempt failed.
    last_error: Option<String>,
    /// When it was queued.
    created_at: DateTime<Utc>,
    /// When it was delivered.
    sent_at: Option<DateTime<Utc>>,
}

/// Your notifications, newest first; admins see everyone's.
#[utoipa::path(
    tag = "notifications",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of notifications", body = Page<Notification>),
        (status = 401, description = "No valid token", body = ProblemBody),
    ),
    security(("bearer" = [])),
)]
#[get("/notifications")]
pub async fn list_notifications(
    module: Data<NotificationModule>,
    Authenticated(caller): Authenticated,
    query: Query<PageQuery>,
) -> Result<Json<Page<Notification>>, Problem> {
    let (limit, cursor) = query.parse()?;
    let before = Cursor::after_id(cursor.as_ref()).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            "the cursor is not valid for this list",
        )
    })?;
    let owner = (!caller.has(Role::Admin)).then_some(caller.user_id);
    let mut conn = module.conn().await?;
    let items = repo::notifications(&mut conn, owner, before, limit.overfetch())
        .await
        .map_err(database)?;
    Ok(Json(Page::from_overfetch(items, limit, |n| n.id)))
}

/// The longest webhook URL accepted, in characters.
const MAX_URL: usize = 2048;

/// The longest webhook URL stored, in bytes, once normalised: the form
/// kept adds a `/` to a bare host and writes each `'` of a query as `%27`.
/// Every message to the URL is kept under a unique index that includes it,
/// whose entries PostgreSQL limits to 2,704 bytes (a test delivers to one
/// of this length, of characters that do not compress).
const MAX_STORED_URL: usize = 2600;

/// A webhook subscription to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/shop", "event_types": ["catalog.product_created.v1"]}))]
pub struct NewWebhook {
    /// Where to POST events: http or https on a public host name (the rule
    /// is `kernel::patterns::PUBLIC_HTTP_URL`); a name that resolves to an
    /// internal address is refused, now and at every call. A deployment's
    /// `notification.webhook_allow` also admits URLs whose host is an address
    /// in the networks it names (development and tests). At most 2048
    /// characters; stored normalised (a `/` added to a bare host, each `'`
    /// of the query written `%27`), where it must fit 2600 (every message
    /// to it is kept under a unique index, whose entries PostgreSQL limits
    /// to 2.7 kB).
    #[schema(
        max_length = 2048,
        pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://(?![^/?#]*[Xx][Nn]--)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?!(?:[Ll][Oo][Cc][Aa][Ll](?:[Hh][Oo][Ss][Tt])?|[Ll][Aa][Nn]|[Ii][Nn][Tt][Ee][Rr][Nn][Aa][Ll])(?:[:/?#]|$))[A-Za-z]{2,63}(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(?:/[/A-Za-z0-9._~!$&'()*+,;=:@%-]*)?(?:\?[/?A-Za-z0-9._~!$&'()*+,;=:@%-]*)?(?:#[/?A-Za-z0-9._~!$&'()*+,;=:@%-]*)?$"
    )]
    url: String,
    /// Event types to send, at least one.
    #[schema(value_type = Vec<EventType>, min_items = 1)]
    event_types: Vec<String>,
}

/// An event type a webhook can subscribe to (schema only: the values are
/// [`crate::EVENT_TYPES`], so the two cannot drift apart).
pub struct EventType;

impl utoipa::PartialSchema for EventType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("An event type a webhook can subscribe to."))
            .enum_values(Some(crate::EVENT_TYPES.iter().copied()))
            .build()
            .into()
    }
}

impl ToSchema for EventType {}

/// A webhook subscription.
#[derive(Serialize, ToSchema, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = crate::repo::webhook_subscriptions)]
pub struct Webhook {
    /// Subscription id.
    id: Uuid,
    /// Where events are POSTed.
    url: String,
    /// Event types sent.
    event_types: Vec<String>,
    /// When it was created.
    created_at: DateTime<Utc>,
}

/// A new subscription and its signing secret, shown only this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    webhook: Webhook,
    /// HMAC-SHA256 key of the `x-shop-signature` header
    /// (`t=<unix>,v1=<hex HMAC of "<t>.<body>">`).
    secret: String,
}

/// Subscribe a URL to event types. Admin only. Each call is POSTed the event
/// envelope, signed, and retried with backoff until it answers 2xx.
#[utoipa::path(
    tag = "notifications",
    request_body = NewWebhook,
    responses(
        (status = 201, description = "The subscription, with its secret", body = CreatedWebhook,
            headers(("location" = String, description = "URL of the subscription"))),
        (status = 409, description = "As many subscriptions as `notification.max_webhooks` exist: delete one first", body = ProblemBody),
        (status = 422, description = "Invalid URL or unknown event type", body = ProblemBody),
    ),
    security(("bearer" = ["admin"])),
)]
#[post("/admin/webhooks")]
pub async fn create_webhook(
    module: Data<NotificationModule>,
    _admin: AdminOnly,
    body: Json<NewWebhook>,
) -> Result<HttpResponse, Problem> {
    let NewWebhook { url, event_types } = body.into_inner();
    let mut errors = Vec::new();
    // Kept as parsed (`HTTPS://Hooks.Example.com` is `https://hooks.example.com/`):
    // the form the client calls, and the one the table's CHECK expects.
    let url = match url::Url::parse(&url) {
        _ if url.chars().count() > MAX_URL => {
            errors.push(kernel::FieldError::new(
                "url",
                format!("must be at most {MAX_URL} characters"),
            ));
            url
        }
        Ok(u) if String::from(u.clone()).len() > MAX_STORED_URL => {
            errors.push(kernel::FieldError::new(
                "url",
                format!(
                    "must be at most {MAX_STORED_URL} characters once normalised (each `'` \
                     of the query written `%27`)"
                ),
            ));
            url
        }
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if let Err(refused) = module.egress.check_subscription(&u).await {
                errors.push(kernel::FieldError::new("url", refused.0));
            } else if !kernel::patterns::is_public_http_url(&url)
                && !module.egress.admits_outside_public_rule(&u)
            {
                errors.push(kernel::FieldError::new(
                    "url",
                    "must be an http(s) URL on a public host name",
                ));
            }
            String::from(u)
        }
        _ => {
            errors.push(kernel::FieldError::new("url", "must be an http(s) URL"));
            url
        }
    };
    if event_types.is_empty() {
        errors.push(kernel::FieldError::new(
            "event_types",
            "name at least one event type",
        ));
    }
    // One error for every unknown type, each named once: a body of
    // thousands of repeats answers one line, not thousands of copies of
    // the known list.
    let mut unknown: Vec<&str> = event_types
        .iter()
        .map(String::as_str)
        .filter(|t| !crate::EVENT_TYPES.contains(t))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    if !unknown.is_empty() {
        const SHOWN: usize = 10;
        let mut named = unknown
            .iter()
            .take(SHOWN)
            .map(|t| format!("`{}`", t.chars().take(64).collect::<String>()))
            .collect::<Vec<_>>()
            .join(", ");
        if unknown.len() > SHOWN {
            named.push_str(&format!(" and {} more", unknown.len() - SHOWN));
        }
        errors.push(kernel::FieldError::new(
            "event_types",
            format!(
                "unknown event types {named} (known: {})",
                crate::EVENT_TYPES.join(", ")
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let mut conn = module.conn().await?;
    let limit = module.max_webhooks;
    let webhook = repo::insert_webhook(&mut conn, &url, &secret, &event_types, limit)
        .await
        .map_err(database)?
        .ok_or_else(|| {
            Problem::new(
                StatusCode::CONFLICT,
                "webhook_limit_reached",
                format!(
                    "{limit} webhook subscriptions exist, as many as \
                     notification.max_webhooks allows: delete one first"
                ),
            )
        })?;
    tracing::info!(webhook.id = %webhook.id, url = %webhook.url, "webhook subscription created");
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/api/v1/admin/webhooks/{}", webhook.id)))
        .json(CreatedWebhook { webhook, secret }))
}

/// Webhook subscriptions (without their secrets). Admin only.
#[utoipa::path(
    tag = "notifications",
    responses((status = 200, description = "Every subscription, oldest first (creations stop at `notification.max_webhooks`)", body = Vec<Webhook>)),
    security(("bearer" = ["admin"])),
)]
#[get("/admin/webhooks")]
pub async fn list_webhooks(
    module: Data<NotificationModule>,
    _admin: AdminOnly,
) -> Result<Json<Vec<Webhook>>, Problem> {
    let mut conn = module.conn().await?;
    let all = repo::webhooks(&mut conn).await.map_err(database)?;
    Ok(Json(all))
}

/// One subscription (without its secret): where a creation's `Location`
/// points. Admin only.
#[utoipa::path(
    tag = "notifications",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The subscription", body = Webhook),
        (status = 404, description = "No such subscription", body = ProblemBody),
    ),
    security(("bearer" = ["admin"])),
)]
#[get("/admin/webhooks/{id}")]
pub async fn get_webhook(
    module: Data<NotificationModule>,
    _admin: AdminOnly,
    id: Path<Uuid>,
) -> Result<Json<Webhook>, Problem> {
    let id = id.into_inner();
    let mut conn = module.conn().await?;
    repo::webhook(&mut conn, id)
        .await
        .map_err(database)?
        .map(Json)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "webhook_not_found",
                format!("no webhook subscription `{id}`"),
            )
        })
}

/// Remove a subscription; its pending calls fail. Admin only.
#[utoipa::path(
    tag = "notifications",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such subscription", body = ProblemBody),
    ),
    security(("bearer" = ["admin"])),
)]
#[delete("/admin/webhooks/{id}")]
pub async fn delete_webhook(
    module: Data<NotificationModule>,
    _admin: AdminOnly,
    id: Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let id = id.into_inner();
    let mut conn = module.conn().await?;
    let removed = repo::delete_webhook(&mut conn, id)
        .await
        .map_err(database)?;
    if removed == 0 {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "webhook_not_found",
            format!("no webhook subscription `{id}`"),
        ));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_webhook_url_schema_states_the_rule_the_server_checks() {
        let schema =
            serde_json::to_value(<super::NewWebhook as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(
            schema["properties"]["url"]["pattern"].as_str(),
            Some(kernel::patterns::PUBLIC_HTTP_URL)
        );
    }
}
