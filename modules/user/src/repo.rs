//! Storage of accounts (`users.users`) and refresh tokens (`users.refresh_tokens`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kernel::Role;
use user_api::{NotificationPreferences, User, UserId, UserStatus};
use uuid::Uuid;

diesel::table! {
    users.users (id) {
        id -> Uuid,
        email -> Text,
        password_hash -> Text,
        display_name -> Text,
        roles -> Array<Text>,
        status -> Text,
        notify_order_updates -> Bool,
        notify_product_news -> Bool,
        notify_marketing -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        version -> BigInt,
    }
}

diesel::table! {
    users.refresh_tokens (id) {
        id -> Uuid,
        family_id -> Uuid,
        user_id -> Uuid,
        token_hash -> Bytea,
        issued_at -> Timestamptz,
        expires_at -> Timestamptz,
        spent_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

/// Unique constraint on emails, to recognise a taken address.
pub(crate) const EMAIL_UNIQUE: &str = "users_email_key";

/// No `Debug`: it holds the password hash.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub(crate) struct UserRow {
    pub(crate) id: Uuid,
    pub(crate) email: String,
    pub(crate) password_hash: String,
    pub(crate) display_name: String,
    roles: Vec<String>,
    status: String,
    notify_order_updates: bool,
    notify_product_news: bool,
    notify_marketing: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// One up with every change (1: registered): the order of the
    /// account's states, which its events carry.
    pub(crate) version: i64,
}

impl UserRow {
    /// The row as the contract's DTO (without the password hash). CHECK
    /// constraints keep roles and status valid; anything else is reported.
    pub(crate) fn into_user(self) -> Result<User, String> {
        let notification_preferences = self.preferences();
        let roles = self
            .roles
            .iter()
            .map(|r| r.parse::<Role>())
            .collect::<Result<Vec<_>, _>>()?;
        let status = match self.status.as_str() {
            "active" => UserStatus::Active,
            "disabled" => UserStatus::Disabled,
            other => return Err(format!("stored status `{other}`")),
        };
        Ok(User {
            id: UserId::from(self.id),
            email: self.email,
            display_name: self.display_name,
            roles,
            status,
            notification_preferences,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }

    /// Which kinds of email the account has opted into.
    pub(crate) fn preferences(&self) -> NotificationPreferences {
        NotificationPreferences {
            order_updates: self.notify_order_updates,
            product_news: self.notify_product_news,
            marketing: self.notify_marketing,
        }
    }

    pub(crate) fn roles(&self) -> Vec<Role> {
        self.roles.iter().filter_map(|r| r.parse().ok()).collect()
    }

    pub(crate) fn is_active(&self) -> bool {
        self.status == UserStatus::Active.as_str()
    }

    /// Active or disabled (anything but `active` is disabled: a CHECK
    /// constraint allows no third status).
    pub(crate) fn status(&self) -> UserStatus {
        if self.is_active() {
            UserStatus::Active
        } else {
            UserStatus::Disabled
        }
    }
}

fn role_names(roles: &[Role]) -> Vec<String> {
    roles.iter().map(|r| r.as_str().to_owned()).collect()
}

/// Inserts an account.
#[tracing::instrument(name = "user.repo.insert", skip_all)]
pub(crate) async fn insert(
    conn: &mut AsyncPgConnection,
    id: UserId,
    email: &str,
    password_hash: &str,
    display_name: &str,
    roles: &[Role],
) -> QueryResult<UserRow> {
    diesel::insert_into(users::table)
        .values((
            users::id.eq(id.as_uuid()),
            users::email.eq(email),
            users::password_hash.eq(password_hash),
            users::display_name.eq(display_name),
            users::roles.eq(role_names(roles)),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
}

/// One account by id, locked until the transaction ends: what a change
/// compares with to know which events to publish (two changes of one
/// account then see each other's result, and none is left unannounced).
#[tracing::instrument(name = "user.repo.find_for_update", skip_all)]
pub(crate) async fn find_for_update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<UserRow>> {
    users::table
        .find(id)
        .select(UserRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// One account by id.
#[tracing::instrument(name = "user.repo.find", skip_all)]
pub(crate) async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<UserRow>> {
    users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// One account, its row share-locked for the rest of the transaction: a
/// token issued under that lock cannot interleave with a password change
/// or a disabling, which update the row and then revoke the user's tokens
/// (the row first, then the tokens, in every transaction that takes both).
#[tracing::instrument(name = "user.repo.find_for_share", skip_all)]
pub(crate) async fn find_for_share(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<UserRow>> {
    users::table
        .find(id)
        .select(UserRow::as_select())
        .for_share()
        .first(conn)
        .await
        .optional()
}

/// The token with this hash, unlocked (to learn its user before locking
/// the user's row, then the token's).
#[tracing::instrument(name = "user.repo.find_refresh", skip_all)]
pub(crate) async fn find_refresh(
    conn: &mut AsyncPgConnection,
    token_hash: &[u8],
) -> QueryResult<Option<RefreshRow>> {
    refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(token_hash))
        .select(RefreshRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// One account by (normalised) email.
#[tracing::instrument(name = "user.repo.find_by_email", skip_all)]
pub(crate) async fn find_by_email(
    conn: &mut AsyncPgConnection,
    email: &str,
) -> QueryResult<Option<UserRow>> {
    users::table
        .filter(users::email.eq(email))
        .select(UserRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Up to `limit` accounts after `after`, oldest first.
#[tracing::instrument(name = "user.repo.list", skip_all)]
pub(crate) async fn list(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<UserRow>> {
    let mut query = users::table
        .select(UserRow::as_select())
        .order(users::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(users::id.gt(after));
    }
    query.load(conn).await
}

/// Changes to an account; `None` fields stay as they are. No `Debug`: it
/// may hold a password hash.
#[derive(Default, AsChangeset)]
#[diesel(table_name = users)]
pub(crate) struct AccountChanges {
    pub(crate) email: Option<String>,
    pub(crate) password_hash: Option<String>,
    pub(crate) display_name: Option<String>,
    pub(crate) roles: Option<Vec<String>>,
    pub(crate) status: Option<String>,
    pub(crate) notify_order_updates: Option<bool>,
    pub(crate) notify_product_news: Option<bool>,
    pub(crate) notify_marketing: Option<bool>,
}

impl AccountChanges {
    pub(crate) fn roles(roles: &[Role]) -> Option<Vec<String>> {
        Some(role_names(roles))
    }
}

/// Applies `changes`; `None` when the account does not exist.
#[tracing::instrument(name = "user.repo.update", skip_all)]
pub(crate) async fn update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    changes: &AccountChanges,
) -> QueryResult<Option<UserRow>> {
    diesel::update(users::table.find(id))
        .set((
            changes,
            users::updated_at.eq(diesel::dsl::now),
            users::version.eq(users::version + 1),
        ))
        .returning(UserRow::as_returning())
        .get_result(conn)
        .await
        .optional()
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = refresh_tokens)]
pub(crate) struct RefreshRow {
    pub(crate) id: Uuid,
    pub(crate) family_id: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) spent_at: Option<DateTime<Utc>>,
    pub(crate) revoked_at: Option<DateTime<Utc>>,
}

/// Replaces the password hash of `id` by `new`, only while it is `old`
/// (same password, current parameters: no token is revoked); whether it
/// did.
#[tracing::instrument(name = "user.repo.replace_password_hash", skip_all)]
pub(crate) async fn replace_password_hash(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    old: &str,
    new: &str,
) -> QueryResult<bool> {
    let replaced = diesel::update(
        users::table
            .filter(users::id.eq(id))
            .filter(users::password_hash.eq(old)),
    )
    .set(users::password_hash.eq(new))
    .execute(conn)
    .await?;
    Ok(replaced == 1)
}

/// Stores a refresh token's hash in `family`.
#[tracing::instrument(name = "user.repo.insert_refresh", skip_all)]
pub(crate) async fn insert_refresh(
    conn: &mut AsyncPgConnection,
    family: Uuid,
    user: Uuid,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> QueryResult<usize> {
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::id.eq(Uuid::now_v7()),
            refresh_tokens::family_id.eq(family),
            refresh_tokens::user_id.eq(user),
            refresh_tokens::token_hash.eq(token_hash),
            refresh_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .await
}

/// The token with this hash, locked for the rest of the transaction.
#[tracing::instrument(name = "user.repo.find_refresh_for_update", skip_all)]
pub(crate) async fn find_refresh_for_update(
    conn: &mut AsyncPgConnection,
    token_hash: &[u8],
) -> QueryResult<Option<RefreshRow>> {
    refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(token_hash))
        .select(RefreshRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Marks a token as used.
#[tracing::instrument(name = "user.repo.spend_refresh", skip_all)]
pub(crate) async fn spend_refresh(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::update(refresh_tokens::table.find(id))
        .set(refresh_tokens::spent_at.eq(diesel::dsl::now))
        .execute(conn)
        .await
}

/// Revokes every live token of a family.
#[tracing::instrument(name = "user.repo.revoke_family", skip_all)]
pub(crate) async fn revoke_family(
    conn: &mut AsyncPgConnection,
    family: Uuid,
) -> QueryResult<usize> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await
}

/// Revokes every live token of a user (password change, disabling).
#[tracing::instrument(name = "user.repo.revoke_all_for_user", skip_all)]
pub(crate) async fn revoke_all_for_user(
    conn: &mut AsyncPgConnection,
    user: Uuid,
) -> QueryResult<usize> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::user_id.eq(user))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await
}

/// Deletes the refresh tokens of families whose every token expired
/// before `before`; how many.
#[tracing::instrument(name = "user.repo.delete_expired_refresh_tokens", skip_all)]
pub(crate) async fn delete_expired_refresh_tokens(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
) -> QueryResult<usize> {
    // Raw: a correlated NOT EXISTS on the same table.
    db::sql(
        "DELETE FROM refresh_tokens t WHERE t.expires_at < $1 AND NOT EXISTS \
         (SELECT 1 FROM refresh_tokens live WHERE live.family_id = t.family_id \
          AND live.expires_at >= $1)",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(before)
    .execute(conn)
    .await
}
