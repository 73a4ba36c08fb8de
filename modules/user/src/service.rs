//! [`UserModule`]: the in-process implementation of [`UserApi`], account
//! creation and the changes users and admins make to accounts.

use std::sync::Arc;
use std::time::Duration;

use auth::Issuer;
use db::Pool;
use diesel::result::Error as DieselError;
use diesel_async::AsyncConnection as _;
use kernel::{CallContext, Caller, Cursor, Failure, FieldError, Page, Role};
use user_api::events::{
    UserDisplayNameChanged, UserEmailChanged, UserPreferencesChanged, UserRegistered,
    UserStatusChanged,
};
use user_api::{ListUsers, NewUser, User, UserApi, UserError, UserId, UserStatus};

use crate::domain::{Email, check_admin_changes, check_password, validate_new, validate_profile};
use crate::error::{AuthFlowError, database, hash_error, taken_or};
use crate::password::PasswordHasher;
use crate::repo::{self, AccountChanges, UserRow};

/// The user module: accounts, passwords and tokens.
#[derive(Clone)]
pub struct UserModule {
    pool: Pool,
    pub(crate) hasher: PasswordHasher,
    pub(crate) issuer: Arc<Issuer>,
    pub(crate) refresh_ttl: Duration,
    /// The longest a session (a family of refresh tokens, from its
    /// sign-in) lasts, however often it is refreshed.
    pub(crate) session_max: Duration,
}

/// [`UserModule::with_session_max`] unless told otherwise: 30 days.
pub const SESSION_MAX: Duration = Duration::from_secs(30 * 86_400);

/// Changes a user makes to their own account.
#[derive(Default)]
pub struct ProfileChanges {
    /// New display name.
    pub display_name: Option<String>,
    /// New email, with the current password to confirm it.
    pub email: Option<(String, String)>,
    /// New email opt-ins.
    pub notification_preferences: Option<user_api::NotificationPreferences>,
}

impl std::fmt::Debug for ProfileChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The current password never reaches a log line.
        f.debug_struct("ProfileChanges")
            .field("display_name", &self.display_name)
            .field("email", &self.email.as_ref().map(|(email, _)| email))
            .field("notification_preferences", &self.notification_preferences)
            .finish()
    }
}

/// Changes an admin makes to an account.
#[derive(Debug, Default)]
pub struct AdminChanges {
    /// New roles (at least one).
    pub roles: Option<Vec<Role>>,
    /// New status; disabling revokes the account's refresh tokens.
    pub status: Option<UserStatus>,
}

/// What an admin's change of an account came to.
enum AdminUpdate {
    Done(repo::UserRow),
    /// No such account.
    Missing,
    /// The acting admin is no longer an active admin.
    Refused,
}

/// What a change confirmed by the current password came to.
enum Changed {
    Done(Box<repo::UserRow>),
    /// The password hash the current password was checked against is no
    /// longer the account's: changed meanwhile.
    PasswordMoved,
    /// No such account.
    NotFound,
}

/// The row as the contract's DTO; a row the DTO cannot hold is `Unexpected`.
fn to_user(row: UserRow) -> Result<User, UserError> {
    row.into_user().map_err(|e| Failure::Unexpected(e).into())
}

/// Who calls; `Unauthenticated` without a caller.
fn caller(cx: &CallContext) -> Result<&Caller, UserError> {
    cx.caller()
        .ok_or(UserError::Common(Failure::Unauthenticated))
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
            session_max: SESSION_MAX,
        }
    }

    /// This module, ending every session `max` after its sign-in (at most
    /// ten years: `user.session_max_days`' bound).
    #[must_use]
    pub fn with_session_max(mut self, max: Duration) -> UserModule {
        self.session_max = max.min(Duration::from_secs(3650 * 86_400));
        self
    }

    /// The module's pool (readiness, metrics).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A connection from the module's pool.
    pub(crate) async fn conn(&self) -> Result<db::Object, UserError> {
        db::checkout(&self.pool, crate::NAME).await
    }

    /// Creates an account holding `roles`, with its `UserRegistered` event in
    /// the same transaction.
    async fn create(
        &self,
        cx: &CallContext,
        new: NewUser,
        roles: &[Role],
    ) -> Result<User, UserError> {
        let valid = validate_new(new).map_err(Failure::Validation)?;
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
                    version: Some(row.version),
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
        let (email, confirm) = match changes.email {
            Some((email, current_password)) => (Some(email), Some(current_password)),
            None => (None, None),
        };
        let valid = validate_profile(changes.display_name.as_deref(), email.as_deref())
            .map_err(Failure::Validation)?;
        let mut update = AccountChanges {
            display_name: valid.display_name,
            email: valid.email.map(|email| email.as_str().to_owned()),
            ..AccountChanges::default()
        };
        if let Some(prefs) = changes.notification_preferences {
            update.notify_order_updates = Some(prefs.order_updates);
            update.notify_product_news = Some(prefs.product_news);
            update.notify_marketing = Some(prefs.marketing);
        }
        // The hash the current password was checked against: the change
        // is made only while it is still the account's (a password changed
        // meanwhile, by its owner or by whoever else knew the old one, is
        // not overruled by a check against the old one).
        let mut checked = None;
        if let Some(password) = confirm {
            // The connection goes back before the (queued, slow) check.
            let row = repo::find(&mut *self.conn().await?, id)
                .await
                .map_err(database)?;
            let stored = row.map(|r| r.password_hash);
            if !self
                .hasher
                .verify(password, stored.clone())
                .await
                .map_err(hash_error)?
            {
                return Err(AuthFlowError::InvalidCredentials);
            }
            checked = stored;
        }
        let mut conn = self.conn().await?;
        let row = conn
            .transaction::<_, DieselError, _>(async |conn| {
                let Some(before) = repo::find_for_update(conn, id).await? else {
                    return Ok(Changed::NotFound);
                };
                if checked
                    .as_ref()
                    .is_some_and(|hash| *hash != before.password_hash)
                {
                    return Ok(Changed::PasswordMoved);
                }
                let Some(after) = repo::update(conn, id, &update).await? else {
                    return Ok(Changed::NotFound);
                };
                let mut batch = events::outbox::Batch::new(crate::NAME, cx);
                if after.email != before.email {
                    batch.push(&UserEmailChanged {
                        user_id: UserId::from(id),
                        old_email: before.email.clone(),
                        new_email: after.email.clone(),
                        version: Some(after.version),
                    })?;
                }
                if after.display_name != before.display_name {
                    batch.push(&UserDisplayNameChanged {
                        user_id: UserId::from(id),
                        display_name: after.display_name.clone(),
                        version: after.version,
                    })?;
                }
                if after.preferences() != before.preferences() {
                    batch.push(&UserPreferencesChanged {
                        user_id: UserId::from(id),
                        notification_preferences: after.preferences(),
                        version: Some(after.version),
                    })?;
                }
                batch.write(conn).await?;
                Ok(Changed::Done(Box::new(after)))
            })
            .await
            .map_err(taken_or)?;
        let row = match row {
            Changed::Done(row) => *row,
            Changed::PasswordMoved => return Err(AuthFlowError::InvalidCredentials),
            Changed::NotFound => return Err(UserError::NotFound(UserId::from(id)).into()),
        };
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
        check_password(&new, Some(&email)).map_err(|m| {
            UserError::Common(Failure::Validation(vec![FieldError::new(
                "new_password",
                m,
            )]))
        })?;
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
        let checked = row.password_hash;
        let mut conn = self.conn().await?;
        let changed = conn
            .transaction::<_, DieselError, _>(async |conn| {
                // Only while the hash the current password was checked
                // against is still the account's: of two changes from the
                // same old password (its owner's and a thief's), the one
                // that commits second is refused, not the first overruled.
                match repo::find_for_update(conn, id).await? {
                    Some(now) if now.password_hash == checked => {}
                    Some(_) => return Ok(Changed::PasswordMoved),
                    None => return Ok(Changed::NotFound),
                }
                let Some(after) = repo::update(conn, id, &changes).await? else {
                    return Ok(Changed::NotFound);
                };
                repo::revoke_all_for_user(conn, id).await?;
                Ok(Changed::Done(Box::new(after)))
            })
            .await
            .map_err(database)?;
        match changed {
            Changed::Done(_) => {}
            Changed::PasswordMoved => return Err(AuthFlowError::InvalidCredentials),
            Changed::NotFound => return Err(UserError::NotFound(UserId::from(id)).into()),
        }
        tracing::info!(user.id = %id, "password changed; refresh tokens revoked");
        Ok(())
    }

    /// An admin changes another account's roles or status.
    ///
    /// # Errors
    /// `Forbidden` for non-admins (as the accounts say now: a token issued
    /// before its holder was disabled or demoted does not do), `NotFound`,
    /// `Validation` (no roles, or an admin removing their own admin role or
    /// disabling themselves).
    pub async fn admin_update(
        &self,
        cx: &CallContext,
        id: UserId,
        changes: AdminChanges,
    ) -> Result<User, UserError> {
        let admin = caller(cx)?;
        if !admin.has(Role::Admin) {
            return Err(UserError::Common(Failure::Forbidden));
        }
        let is_self = admin.user_id == id.as_uuid();
        check_admin_changes(changes.roles.as_deref(), changes.status, is_self)
            .map_err(Failure::Validation)?;
        let update = AccountChanges {
            roles: changes.roles.as_deref().and_then(AccountChanges::roles),
            status: changes.status.map(|s| s.as_str().to_owned()),
            ..AccountChanges::default()
        };
        let disable = changes.status == Some(UserStatus::Disabled);
        let mut conn = self.conn().await?;
        let outcome = conn
            .transaction::<_, DieselError, _>(async |conn| {
                // The acting admin as the accounts say now, not as their token
                // said when it was issued: an admin disabled or demoted since
                // must not undo it, or do it to another, with the token's
                // remaining minutes. Both rows locked in id order (two admins
                // changing each other at once must not deadlock).
                let target = id.as_uuid();
                let (actor, before) = if is_self {
                    let row = repo::find_for_update(conn, target).await?;
                    (row.clone(), row)
                } else if admin.user_id < target {
                    let actor = repo::find_for_update(conn, admin.user_id).await?;
                    (actor, repo::find_for_update(conn, target).await?)
                } else {
                    let before = repo::find_for_update(conn, target).await?;
                    (repo::find_for_update(conn, admin.user_id).await?, before)
                };
                if !actor.is_some_and(|a| a.is_active() && a.roles().contains(&Role::Admin)) {
                    return Ok(AdminUpdate::Refused);
                }
                let Some(before) = before else {
                    return Ok(AdminUpdate::Missing);
                };
                let Some(after) = repo::update(conn, target, &update).await? else {
                    return Ok(AdminUpdate::Missing);
                };
                if disable {
                    repo::revoke_all_for_user(conn, id.as_uuid()).await?;
                }
                if after.status() != before.status() {
                    let changed = UserStatusChanged {
                        user_id: id,
                        status: after.status(),
                        version: after.version,
                    };
                    events::outbox::publish(conn, crate::NAME, cx, &changed).await?;
                }
                Ok(AdminUpdate::Done(after))
            })
            .await
            .map_err(database)?;
        let row = match outcome {
            AdminUpdate::Done(row) => row,
            AdminUpdate::Missing => return Err(UserError::NotFound(id)),
            AdminUpdate::Refused => return Err(UserError::Common(Failure::Forbidden)),
        };
        events::outbox::wake(crate::NAME);
        tracing::info!(user.id = %id, by = %admin.user_id, "account changed by an admin");
        to_user(row)
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
            return Err(UserError::Common(Failure::Forbidden));
        }
        let after = Cursor::after_id(query.cursor.as_ref())
            .map_err(|_| UserError::Common(Failure::InvalidCursor))?;
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
