//! `/users` and `/auth` routes: thin adapters over [`UserModule`], with the
//! stricter limits of sign-in and registration; their bodies are in `types`.

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::web::{Data, Json, Path, Query};
use actix_web::{HttpRequest, HttpResponse, get, patch, post};
use auth::{AdminOnly, Authenticated};
use kernel::{FieldError, Page, ProblemBody};
use user_api::{ListUsers, NewUser, User, UserApi, UserId};
use web::ratelimit::KeyedLimit;
use web::{ApiError, PageQuery, Problem, RequestCx};

use crate::{AdminChanges, ProfileChanges, TokenPair, UserModule};

mod types;

pub use types::{AdminPatch, Credentials, MePatch, PasswordChange, RefreshRequest, TokenResponse};

/// Registers the user module's routes (relative to `/api/v1`).
pub fn configure(cfg: &mut web::Routes<'_, '_>) {
    cfg.service(register)
        .service(get_me)
        .service(update_me)
        .service(change_password)
        .service(list_users)
        .service(get_user)
        .service(update_user)
        .service(create_token)
        .service(refresh_token)
        .service(logout);
}

type Result<T = HttpResponse> = std::result::Result<T, actix_web::Error>;

/// The stricter limits of sign-in and registration (per minute; `None` = off).
#[derive(Debug)]
pub struct Limits {
    trusted_proxies: Vec<web::ratelimit::TrustedProxy>,
    login_by_ip: KeyedLimit<IpAddr>,
    /// Sign-ins per IPv6 site (`web::ratelimit::site`, its /56):
    /// `SITE_SHARE` clients' worth.
    login_by_site: KeyedLimit<IpAddr>,
    login_by_account: KeyedLimit<String>,
    register_by_ip: KeyedLimit<IpAddr>,
    register_by_site: KeyedLimit<IpAddr>,
    /// Current-password checks (password and email changes) per account:
    /// the sign-in limit per account, so a stolen session cannot guess
    /// faster than a sign-in form.
    password_by_account: KeyedLimit<uuid::Uuid>,
}

impl Limits {
    /// Limits of sign-ins per client IP and per account, and of
    /// registrations per client IP; `trusted_proxies` may name the client
    /// in `x-forwarded-for`.
    pub fn new(
        trusted_proxies: Vec<web::ratelimit::TrustedProxy>,
        login_per_ip: Option<u32>,
        login_per_account: Option<u32>,
        registrations_per_ip: Option<u32>,
    ) -> Limits {
        let site = |per_client: Option<u32>| {
            per_client.map(|n| n.saturating_mul(web::ratelimit::SITE_SHARE))
        };
        Limits {
            trusted_proxies,
            login_by_ip: KeyedLimit::per_minute(login_per_ip),
            login_by_site: KeyedLimit::per_minute(site(login_per_ip)),
            login_by_account: KeyedLimit::per_minute(login_per_account),
            register_by_ip: KeyedLimit::per_minute(registrations_per_ip),
            register_by_site: KeyedLimit::per_minute(site(registrations_per_ip)),
            password_by_account: KeyedLimit::per_minute(login_per_account),
        }
    }

    /// The client's bucket: its address, an IPv6 one's /64
    /// (`web::ratelimit::bucket`).
    fn client_ip(&self, req: &HttpRequest) -> IpAddr {
        web::ratelimit::client_ip(req.peer_addr(), req.headers(), &self.trusted_proxies)
            .map_or(IpAddr::from([0, 0, 0, 0]), web::ratelimit::bucket)
    }

    /// Counts a request against its client's `by_ip` limit and, for an
    /// IPv6 client, its site's `by_site` (a subscriber's /56 holds 256
    /// clients' /64s: one subscriber would otherwise get as many budgets).
    fn check(
        &self,
        req: &HttpRequest,
        by_ip: &KeyedLimit<IpAddr>,
        by_site: &KeyedLimit<IpAddr>,
    ) -> std::result::Result<(), Problem> {
        let client = self.client_ip(req);
        by_ip.check(&client)?;
        match web::ratelimit::site(client) {
            Some(site) => by_site.check(&site),
            None => Ok(()),
        }
    }
}

/// Register a customer account.
#[utoipa::path(
    tag = "users",
    request_body = NewUser,
    responses(
        (status = 201, description = "The new account", body = User,
            headers(("location" = String, description = "URL of the account"))),
        (status = 409, description = "The email is taken", body = ProblemBody),
        (status = 422, description = "Invalid fields (email, password policy, display name) or unknown fields such as `roles`", body = ProblemBody),
        (status = 429, description = "Too many registrations from this address", body = ProblemBody),
    ),
)]
#[post("/users")]
pub async fn register(
    users: Data<UserModule>,
    limits: Data<Limits>,
    req: HttpRequest,
    RequestCx(cx): RequestCx,
    body: Json<NewUser>,
) -> Result {
    limits.check(&req, &limits.register_by_ip, &limits.register_by_site)?;
    let user = users
        .register(&cx, body.into_inner())
        .await
        .map_err(ApiError)?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/users/{}", user.id)))
        .json(user))
}

/// The signed-in user's own account.
#[utoipa::path(
    tag = "users",
    responses(
        (status = 200, description = "Your account", body = User),
        (status = 401, description = "No valid token", body = ProblemBody),
        (status = 404, description = "No account holds the token's subject (the shop's own service token)", body = ProblemBody),
    ),
    security(("bearer" = [])),
)]
#[get("/users/me")]
pub async fn get_me(
    users: Data<UserModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
) -> Result<Json<User>> {
    Ok(Json(users.me(&cx).await.map_err(ApiError)?))
}

/// Change your profile, email (with your password) or email opt-ins.
#[utoipa::path(
    tag = "users",
    request_body = MePatch,
    responses(
        (status = 200, description = "Your account", body = User),
        (status = 401, description = "No valid token, or a wrong current password", body = ProblemBody),
        (status = 404, description = "No account holds the token's subject (the shop's own service token)", body = ProblemBody),
        (status = 409, description = "The new email is taken", body = ProblemBody),
        (status = 422, description = "Invalid or unknown fields", body = ProblemBody),
    ),
    security(("bearer" = [])),
)]
#[patch("/users/me")]
pub async fn update_me(
    users: Data<UserModule>,
    limits: Data<Limits>,
    Authenticated(caller): Authenticated,
    RequestCx(cx): RequestCx,
    body: Json<MePatch>,
) -> Result<Json<User>> {
    let MePatch {
        display_name,
        email,
        current_password,
        notification_preferences,
    } = body.into_inner();
    let email = match (email, current_password) {
        (Some(email), Some(password)) => {
            limits.password_by_account.check(&caller.user_id)?;
            Some((email, password))
        }
        (Some(_), None) => {
            return Err(Problem::validation(vec![FieldError::new(
                "current_password",
                "is required to change the email address",
            )])
            .into());
        }
        (None, _) => None,
    };
    let changes = ProfileChanges {
        display_name,
        email,
        notification_preferences,
    };
    Ok(Json(users.update_me(&cx, changes).await.map_err(ApiError)?))
}

/// Change your password. Signs you out everywhere: every refresh token is revoked.
#[utoipa::path(
    tag = "users",
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed"),
        (status = 401, description = "No valid token, or a wrong current password", body = ProblemBody),
        (status = 404, description = "No account holds the token's subject (the shop's own service token)", body = ProblemBody),
        (status = 422, description = "The new password breaks the policy", body = ProblemBody),
    ),
    security(("bearer" = [])),
)]
#[post("/users/me/password")]
pub async fn change_password(
    users: Data<UserModule>,
    limits: Data<Limits>,
    Authenticated(caller): Authenticated,
    RequestCx(cx): RequestCx,
    body: Json<PasswordChange>,
) -> Result {
    limits.password_by_account.check(&caller.user_id)?;
    let PasswordChange {
        current_password,
        new_password,
    } = body.into_inner();
    users
        .change_password(&cx, current_password, new_password)
        .await
        .map_err(ApiError)?;
    Ok(HttpResponse::NoContent().finish())
}

/// List accounts, oldest first. Admin only.
#[utoipa::path(
    tag = "users",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of accounts", body = Page<User>),
        (status = 401, description = "No valid token", body = ProblemBody),
        (status = 403, description = "Not an admin", body = ProblemBody),
    ),
    security(("bearer" = ["admin"])),
)]
#[get("/users")]
pub async fn list_users(
    users: Data<UserModule>,
    _admin: AdminOnly,
    RequestCx(cx): RequestCx,
    query: Query<PageQuery>,
) -> Result<Json<Page<User>>> {
    let (limit, cursor) = query.parse()?;
    let page = users
        .list_users(&cx, ListUsers { limit, cursor })
        .await
        .map_err(ApiError)?;
    Ok(Json(page))
}

/// One account: your own, or anyone's for an admin. Others' accounts are 404.
#[utoipa::path(
    tag = "users",
    params(("id" = UserId, Path, description = "User id")),
    responses(
        (status = 200, description = "The account", body = User),
        (status = 401, description = "No valid token", body = ProblemBody),
        (status = 404, description = "No such account, or not yours", body = ProblemBody),
    ),
    security(("bearer" = ["customer", "admin"])),
)]
#[get("/users/{id}")]
pub async fn get_user(
    users: Data<UserModule>,
    _caller: Authenticated,
    RequestCx(cx): RequestCx,
    id: Path<UserId>,
) -> Result<Json<User>> {
    Ok(Json(
        users
            .get_user(&cx, id.into_inner())
            .await
            .map_err(ApiError)?,
    ))
}

/// Change an account's roles or status. Admin only.
#[utoipa::path(
    tag = "users",
    params(("id" = UserId, Path, description = "User id")),
    request_body = AdminPatch,
    responses(
        (status = 200, description = "The account", body = User),
        (status = 401, description = "No valid token", body = ProblemBody),
        (status = 403, description = "Not an admin", body = ProblemBody),
        (status = 404, description = "No such account", body = ProblemBody),
        (status = 422, description = "Invalid change (no roles; removing your own admin role)", body = ProblemBody),
    ),
    security(("bearer" = ["admin"])),
)]
#[patch("/users/{id}")]
pub async fn update_user(
    users: Data<UserModule>,
    _admin: AdminOnly,
    RequestCx(cx): RequestCx,
    id: Path<UserId>,
    body: Json<AdminPatch>,
) -> Result<Json<User>> {
    let AdminPatch { roles, status } = body.into_inner();
    let user = users
        .admin_update(&cx, id.into_inner(), AdminChanges { roles, status })
        .await
        .map_err(ApiError)?;
    Ok(Json(user))
}

fn tokens(pair: TokenPair) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(TokenResponse {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: "Bearer",
            expires_in: pair.expires_in,
        })
}

/// Sign in: email and password for an access and a refresh token.
/// An unknown email and a wrong password get the same answer.
#[utoipa::path(
    tag = "auth",
    request_body = Credentials,
    responses(
        (status = 200, description = "Tokens", body = TokenResponse),
        (status = 401, description = "Wrong email or password", body = ProblemBody),
        (status = 403, description = "The account is disabled", body = ProblemBody),
        (status = 429, description = "Too many attempts from this address or for this account", body = ProblemBody),
    ),
)]
#[post("/auth/token")]
pub async fn create_token(
    users: Data<UserModule>,
    limits: Data<Limits>,
    req: HttpRequest,
    body: Json<Credentials>,
) -> Result {
    let Credentials { email, password } = body.into_inner();
    limits.check(&req, &limits.login_by_ip, &limits.login_by_site)?;
    // No account has a longer address (RFC 5321's limit): answered as a
    // wrong password, before it becomes a key of the per-account limit
    // (a flood of distinct 200 KiB "addresses" would be kept there).
    if email.trim().len() > crate::domain::MAX_EMAIL_LEN {
        return Err(ApiError(crate::AuthFlowError::InvalidCredentials).into());
    }
    limits
        .login_by_account
        .check(&email.trim().to_lowercase())?;
    let pair = users.login(&email, password).await.map_err(ApiError)?;
    Ok(tokens(pair))
}

/// Trade a refresh token for a new pair. The old one is spent; presenting it
/// again revokes every token descended from the same sign-in.
#[utoipa::path(
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Unknown, expired, spent or revoked refresh token", body = ProblemBody),
    ),
)]
#[post("/auth/refresh")]
pub async fn refresh_token(users: Data<UserModule>, body: Json<RefreshRequest>) -> Result {
    let pair = users.refresh(&body.refresh_token).await.map_err(ApiError)?;
    Ok(tokens(pair))
}

/// Sign out: revoke the refresh token and its family. Idempotent.
#[utoipa::path(
    tag = "auth",
    request_body = RefreshRequest,
    responses((status = 204, description = "Signed out")),
)]
#[post("/auth/logout")]
pub async fn logout(users: Data<UserModule>, body: Json<RefreshRequest>) -> Result {
    users.logout(&body.refresh_token).await.map_err(ApiError)?;
    Ok(HttpResponse::NoContent().finish())
}
