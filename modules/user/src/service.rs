//! [`UserModule`]: accounts and the token flows, over the module's pool.

use std::sync::Arc;
use std::time::Duration;

use auth::Issuer;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use db::{Pool, PoolError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncConnection as _;
use kernel::{CallContext, Caller, Cursor, FieldError, Page, ProblemCode, Role};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use user_api::events::{UserEmailChanged, UserPreferencesChanged, UserRegistered};
use user_api::{ListUsers, NewUser, User, UserApi, UserError, UserId, UserStatus};
use uuid::Uuid;

use crate::domain::{Email, check_display_name, check_password, validate_new};
use crate::password::PasswordHasher;
use crate::repo::{self, AccountChanges, UserRow};

/// The user module: accounts, passwords and tokens.
#[derive(Clone)]
pub struct UserModule {
    pool: Pool,
    hasher: PasswordHasher,
    issuer: Arc<Issuer>,
    refresh_ttl: Duration,
}

/// Access and refresh token handed out at sign-in and refresh.
#[derive(Debug)]
pub struct TokenPair {
    /// The JWT.
    pub access_token: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// The opaque refresh token (only its hash is stored).
    pub refresh_token: String,
}

/// Why a sign-in, refresh or password change failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFlowError {
    /// Unknown email or wrong password: the same answer for both.
    #[error("the email or password is wrong")]
    InvalidCredentials,
    /// Unknown, expired, spent or revoked refresh token.
    #[error("the refresh token is not valid")]
    InvalidRefreshToken,
    /// The password was right, but the account is disabled.
    #[error("this account is disabled")]
    AccountDisabled,
    /// Something else the user module reports.
    #[error(transparent)]
    User(#[from] UserError),
}

impl ProblemCode for AuthFlowError {
    fn status(&self) -> u16 {
        match self {
            AuthFlowError::InvalidCredentials | AuthFlowError::InvalidRefreshToken => 401,
            AuthFlowError::AccountDisabled => 403,
            AuthFlowError::User(e) => e.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AuthFlowError::InvalidCredentials => "invalid_credentials",
            AuthFlowError::InvalidRefreshToken => "invalid_refresh_token",
            AuthFlowError::AccountDisabled => "account_disabled",
            AuthFlowError::User(e) => e.code(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            AuthFlowError::User(e) => e.retry_after(),
            _ => None,
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            AuthFlowError::User(e) => e.field_errors(),
            _ => Vec::new(),
        }
    }
}

/// Changes a user makes to their own account.
#[derive(Debug, Default)]
pub struct ProfileChanges {
    /// New display name.
    pub display_name: Option<String>,
    /// New email, with the current password to confirm it.
    pub email: Option<(String, String)>,
    /// New email opt-ins.
    pub notification_preferences: Option<user_api::NotificationPreferences>,
}

/// Changes an admin makes to an account.
#[derive(Debug, Default)]
pub struct AdminChanges {
    /// New roles (at least one).
    pub roles: Option<Vec<Role>>,
    /// New status; disabling revokes the account's refresh tokens.
    pub status: Option<UserStatus>,
}

fn unavailable(error: PoolError) -> UserError {
    tracing::warn!(error = %error, "user database unavailable");
    UserError::Unavailable("the user database is unavailable".to_owned())
}

fn database(error: DieselError) -> UserError {
    match db::unavailable_reason(&error) {
        Some(reason) => UserError::Unavailable(format!("the user database {reason}")),
        None => UserError::Unexpected(format!("user database error: {error}")),
    }
}

fn taken_or(error: DieselError) -> UserError {
    match &error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some(repo::EMAIL_UNIQUE) =>
        {
            UserError::EmailTaken
        }
        _ => database(error),
    }
}

fn to_user(row: UserRow) -> Result<User, UserError> {
    row.into_user().map_err(UserError::Unexpected)
}

fn hash_error(e: crate::password::HashError) -> UserError {
    match e {
        crate::password::HashError::Busy => UserError::Busy,
        crate::password::HashError::Failed(e) => UserError::Unexpected(e),
    }
}

fn caller(cx: &CallContext) -> Result<&Caller, UserError> {
    cx.caller().ok_or(UserError::Unauthenticated)
}

/// A new opaque refresh token and the hash stored for it.
fn new_refresh_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = refresh_hash(&token);
    (token, hash)
}

fn refresh_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// What happened to a presented refresh token, decided in one transaction.
enum Refresh {
    Rotated { user: UserRow, token: String },
    Reused,
    Invalid,
}

impl UserModule {
    /// The module over its pool, hashing with `hasher` and signing with `issuer`.
    pub fn new(
        pool: Pool,
        hasher: PasswordHasher,
        issuer: Arc<Issuer>,
        refresh_ttl: Duration,
    ) -> UserModule {
        UserModule {
            pool,
            hasher,
            issuer,
            refresh_ttl,
        }
    }

    /// The module's pool (readiness, metrics).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn conn(&self) -> Result<db::Object, UserError> {
        db::connection(&self.pool, crate::NAME)
            .await
            .map_err(unavailable)
    }

    /// Deletes refresh tokens that expired more than a day ago; how many.
    ///
    /// # Errors
    /// Database unavailability.
    pub async fn prune_refresh_tokens(&self) -> Result<usize, UserError> {
        let mut conn = self.conn().await?;
        repo::delete_expired_refresh_tokens(
            &mut conn,
            chrono::Utc::now() - chrono::Duration::days(1),
        )
        .await
        .map_err(|e| UserError::Unavailable(format!("pruning refresh tokens: {e}")))
    }

    async fn create(
        &self,
        cx: &CallContext,
        new: NewUser,
        roles: &[Role],
    ) -> Result<User, UserError> {
        let valid = validate_new(new).map_err(UserError::Validation)?;
        let hash = self.hasher.hash(valid.password).await.map_err(hash_error)?;
        let mut conn = self.conn().await?;
        let id = UserId::generate();
        let row = conn
            .transaction::<_, DieselError, _>(async |conn| {
                let row = repo::insert(
                    conn,
                    id,
                    valid.email.as_str(),
                    &hash,
                    &valid.display_name,
                    roles,
                )
                .await?;
                let event = UserRegistered {
                    user_id: id,
                    email: valid.email.as_str().to_owned(),
                    display_name: valid.display_name.clone(),
                    notification_preferences: user_api::NotificationPreferences::default(),
                };
                events::outbox::publish(conn, crate::NAME, cx, &event).await?;
                Ok(row)
            })
            .await
            .map_err(taken_or)?;
        events::outbox::wake(crate::NAME);
        tracing::info!(user.id = %id, roles = ?roles, "account created");
        to_user(row)
    }

    /// Creates an admin account (the `shop admin create` command).
    ///
    /// # Errors
    /// As [`UserApi::register`].
    pub async fn create_admin(&self, new: NewUser) -> Result<User, UserError> {
        self.create(&CallContext::background(), new, &[Role::Admin])
            .await
    }

    /// Signs in with email and password.
    ///
    /// # Errors
    /// [`AuthFlowError::InvalidCredentials`] alike for an unknown email and a
    /// wrong password (same status, body and work), `AccountDisabled` only
    /// after a correct password.
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, email: &str, password: String) -> Result<TokenPair, AuthFlowError> {
        let row = {
            let mut conn = self.conn().await?;
            repo::find_by_email(&mut conn, &Email::lookup_key(email))
                .await
                .map_err(database)?
        };
        let stored = row.as_ref().map(|r| r.password_hash.clone());
        let matches = self
            .hasher
            .verify(password, stored)
            .await
            .map_err(hash_error)?;
        let Some(row) = row.filter(|_| matches) else {
            tracing::info!("sign-in refused");
            return Err(AuthFlowError::InvalidCredentials);
        };
        if !row.is_active() {
            return Err(AuthFlowError::AccountDisabled);
        }
        let mut conn = self.conn().await?;
        let (refresh_token, hash) = new_refresh_token();
        repo::insert_refresh(
            &mut conn,
            Uuid::now_v7(),
            row.id,
            &hash,
            self.refresh_expiry(),
        )
        .await
        .map_err(database)?;
        tracing::info!(user.id = %row.id, "signed in");
        self.pair(&row, refresh_token)
    }

    /// Spends a refresh token for a new pair in the same family. A token
    /// presented twice revokes its whole family.
    ///
    /// # Errors
    /// [`AuthFlowError::InvalidRefreshToken`].
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, token: &str) -> Result<TokenPair, AuthFlowError> {
        let presented = refresh_hash(token);
        let expires_at = self.refresh_expiry();
        let mut conn = self.conn().await?;
        let outcome = conn
            .transaction::<_, DieselError, _>(async |conn| {
                let Some(found) = repo::find_refresh_for_update(conn, &presented).await? else {
                    return Ok(Refresh::Invalid);
                };
                if found.spent_at.is_some() || found.revoked_at.is_some() {
                    repo::revoke_family(conn, found.family_id).await?;
                    return Ok(Refresh::Reused);
                }
                let user = repo::find(conn, found.user_id).await?;
                let user = match user {
                    Some(user) if user.is_active() && found.expires_at > chrono::Utc::now() => user,
                    _ => {
                        repo::revoke_family(conn, found.family_id).await?;
                        return Ok(Refresh::Invalid);
                    }
                };
                repo::spend_refresh(conn, found.id).await?;
                let (token, hash) = new_refresh_token();
                repo::insert_refresh(conn, found.family_id, user.id, &hash, expires_at).await?;
                Ok(Refresh::Rotated { user, token })
            })
            .await
            .map_err(database)?;
        match outcome {
            Refresh::Rotated { user, token } => self.pair(&user, token),
            Refresh::Reused => {
                tracing::warn!("a spent refresh token was presented again; its family is revoked");
                Err(AuthFlowError::InvalidRefreshToken)
            }
            Refresh::Invalid => Err(AuthFlowError::InvalidRefreshToken),
        }
    }

    /// Revokes the family of a refresh token. Unknown tokens are ignored, so
    /// logging out twice is harmless.
    ///
    /// # Errors
    /// Database failures only.
    pub async fn logout(&self, token: &str) -> Result<(), AuthFlowError> {
        let presented = refresh_hash(token);
        let mut conn = self.conn().await?;
        conn.transaction::<_, DieselError, _>(async |conn| {
            if let Some(found) = repo::find_refresh_for_update(conn, &presented).await? {
                repo::revoke_family(conn, found.family_id).await?;
            }
            Ok(())
        })
        .await
        .map_err(database)?;
        Ok(())
    }

    /// The caller's own account.
    ///
    /// # Errors
    /// `Unauthenticated`; `NotFound` if the account was deleted since the token was issued.
    pub async fn me(&self, cx: &CallContext) -> Result<User, UserError> {
        let id = UserId::from(caller(cx)?.user_id);
        self.get_user(cx, id).await
    }

    /// Changes the caller's own profile. Changing the email needs the
    /// current password.
    ///
    /// # Errors
    /// `Validation`, `EmailTaken`, `InvalidCredentials` for a wrong current password.
    pub async fn update_me(
        &self,
        cx: &CallContext,
        changes: ProfileChanges,
    ) -> Result<User, AuthFlowError> {
        let id = caller(cx)?.user_id;
        let mut errors = Vec::new();
        let mut update = AccountChanges::default();
        if let Some(name) = &changes.display_name {
            match check_display_name(name) {
                Ok(name) => update.display_name = Some(name),
                Err(m) => errors.push(FieldError::new("display_name", m)),
            }
        }
        let mut confirm = None;
        if let Some((email, current_password)) = changes.email {
            match Email::parse(&email) {
                Ok(email) => update.email = Some(email.as_str().to_owned()),
                Err(m) => errors.push(FieldError::new("email", m)),
            }
            confirm = Some(current_password);
        }
        if let Some(prefs) = changes.notification_preferences {
            update.notify_order_updates = Some(prefs.order_updates);
            update.notify_product_news = Some(prefs.product_news);
            update.notify_marketing = Some(prefs.marketing);
        }
        if !errors.is_empty() {
            return Err(UserError::Validation(errors).into());
        }
        if let Some(password) = confirm {
            // The connection goes back before the (queued, slow) check.
            let row = repo::find(&mut *self.conn().await?, id)
                .await
                .map_err(database)?;
            let stored = row.map(|r| r.password_hash);
            if !self
                .hasher
                .verify(password, stored)
                .await
                .map_err(hash_error)?
            {
                return Err(AuthFlowError::InvalidCredentials);
            }
        }
        let prefs_changed = changes.notification_preferences;
        let mut conn = self.conn().await?;
        let row = conn
            .transaction::<_, DieselError, _>(async |conn| {
                let Some(before) = repo::find(conn, id).await? else {
                    return Ok(None);
                };
                let Some(after) = repo::update(conn, id, &update).await? else {
                    return Ok(None);
                };
                if after.email != before.email {
                    let event = UserEmailChanged {
                        user_id: UserId::from(id),
                        old_email: before.email.clone(),
                        new_email: after.email.clone(),
                    };
                    events::outbox::publish(conn, crate::NAME, cx, &event).await?;
                }
                if let Some(notification_preferences) = prefs_changed {
                    let event = UserPreferencesChanged {
                        user_id: UserId::from(id),
                        notification_preferences,
                    };
                    events::outbox::publish(conn, crate::NAME, cx, &event).await?;
                }
                Ok(Some(after))
            })
            .await
            .map_err(taken_or)?
            .ok_or(UserError::NotFound(UserId::from(id)))?;
        events::outbox::wake(crate::NAME);
        if update.email.is_some() {
            tracing::info!(user.id = %id, "email address changed");
        }
        Ok(to_user(row)?)
    }

    /// Changes the caller's password and revokes every refresh token.
    ///
    /// # Errors
    /// `InvalidCredentials` for a wrong current password, `Validation` for a weak new one.
    pub async fn change_password(
        &self,
        cx: &CallContext,
        current: String,
        new: String,
    ) -> Result<(), AuthFlowError> {
        let id = caller(cx)?.user_id;
        // No connection is held while the password work waits and runs.
        let row = repo::find(&mut *self.conn().await?, id)
            .await
            .map_err(database)?
            .ok_or(UserError::NotFound(UserId::from(id)))?;
        let email = Email::stored(row.email.clone());
        check_password(&new, Some(&email))
            .map_err(|m| UserError::Validation(vec![FieldError::new("new_password", m)]))?;
        if !self
            .hasher
            .verify(current, Some(row.password_hash.clone()))
            .await
            .map_err(hash_error)?
        {
            return Err(AuthFlowError::InvalidCredentials);
        }
        let hash = self.hasher.hash(new).await.map_err(hash_error)?;
        let changes = AccountChanges {
            password_hash: Some(hash),
            ..AccountChanges::default()
        };
        let mut conn = self.conn().await?;
        conn.transaction::<_, DieselError, _>(async |conn| {
            repo::update(conn, id, &changes).await?;
            repo::revoke_all_for_user(conn, id).await?;
            Ok(())
        })
        .await
        .map_err(database)?;
        tracing::info!(user.id = %id, "password changed; refresh tokens revoked");
        Ok(())
    }

    /// An admin changes another account's roles or status.
    ///
    /// # Errors
    /// `Forbidden` for non-admins, `NotFound`, `Validation` (no roles, or an
    /// admin removing their own admin role or disabling themselves).
    pub async fn admin_update(
        &self,
        cx: &CallContext,
        id: UserId,
        changes: AdminChanges,
    ) -> Result<User, UserError> {
        let admin = caller(cx)?;
        if !admin.has(Role::Admin) {
            return Err(UserError::Forbidden);
        }
        let mut errors = Vec::new();
        let is_self = admin.user_id == id.as_uuid();
        if let Some(roles) = &changes.roles {
            if roles.is_empty() {
                errors.push(FieldError::new("roles", "must hold at least one role"));
            } else if roles.contains(&Role::Service) {
                errors.push(FieldError::new(
                    "roles",
                    "`service` is the identity of the shop's own modules, not a user's role",
                ));
            } else if is_self && !roles.contains(&Role::Admin) {
                errors.push(FieldError::new(
                    "roles",
                    "you cannot remove your own admin role",
                ));
            }
        }
        if is_self && changes.status == Some(UserStatus::Disabled) {
            errors.push(FieldError::new("status", "you cannot disable yourself"));
        }
        if !errors.is_empty() {
            return Err(UserError::Validation(errors));
        }
        let update = AccountChanges {
            roles: changes.roles.as_deref().and_then(AccountChanges::roles),
            status: changes.status.map(|s| s.as_str().to_owned()),
            ..AccountChanges::default()
        };
        let disable = changes.status == Some(UserStatus::Disabled);
        let mut conn = self.conn().await?;
        let row = conn
            .transaction::<_, DieselError, _>(async |conn| {
                let row = repo::update(conn, id.as_uuid(), &update).await?;
                if disable && row.is_some() {
                    repo::revoke_all_for_user(conn, id.as_uuid()).await?;
                }
                Ok(row)
            })
            .await
            .map_err(database)?
            .ok_or(UserError::NotFound(id))?;
        tracing::info!(user.id = %id, by = %admin.user_id, "account changed by an admin");
        to_user(row)
    }

    fn refresh_expiry(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
            + chrono::Duration::from_std(self.refresh_ttl).unwrap_or(chrono::Duration::days(14))
    }

    fn pair(&self, user: &UserRow, refresh_token: String) -> Result<TokenPair, AuthFlowError> {
        let access = self
            .issuer
            .issue(user.id, &user.roles())
            .map_err(|e| UserError::Unexpected(format!("cannot sign a token: {e}")))?;
        Ok(TokenPair {
            access_token: access.token,
            expires_in: access.expires_in,
            refresh_token,
        })
    }
}

#[async_trait::async_trait]
impl UserApi for UserModule {
    #[tracing::instrument(skip_all)]
    async fn register(&self, cx: &CallContext, new: NewUser) -> Result<User, UserError> {
        self.create(cx, new, &[Role::Customer]).await
    }

    #[tracing::instrument(skip_all, fields(user.id = %id))]
    async fn get_user(&self, cx: &CallContext, id: UserId) -> Result<User, UserError> {
        if !caller(cx)?.may_access(id.as_uuid()) {
            return Err(UserError::NotFound(id));
        }
        let mut conn = self.conn().await?;
        let row = repo::find(&mut conn, id.as_uuid())
            .await
            .map_err(database)?
            .ok_or(UserError::NotFound(id))?;
        to_user(row)
    }

    #[tracing::instrument(skip_all)]
    async fn list_users(
        &self,
        cx: &CallContext,
        query: ListUsers,
    ) -> Result<Page<User>, UserError> {
        if !caller(cx)?.has(Role::Admin) {
            return Err(UserError::Forbidden);
        }
        let after =
            Cursor::after_id(query.cursor.as_ref()).map_err(|_| UserError::InvalidCursor)?;
        let mut conn = self.conn().await?;
        let users = repo::list(&mut conn, after, query.limit.overfetch())
            .await
            .map_err(database)?
            .into_iter()
            .map(to_user)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(users, query.limit, |u| u.id.as_uuid()))
    }
}

/// Prunes expired refresh tokens every `user.prune_interval_secs`, first at
/// start.
pub struct RetentionJob {
    users: UserModule,
    every: Duration,
}

impl RetentionJob {
    /// The job of `users`.
    pub fn new(users: UserModule, every: Duration) -> RetentionJob {
        RetentionJob { users, every }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            match self.users.prune_refresh_tokens().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(tokens = n, "expired refresh tokens pruned"),
                Err(e) => tracing::warn!(error = %e, "pruning refresh tokens failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.every.max(Duration::from_secs(1))) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}
