//! User DTOs and ids.

use std::fmt;

use chrono::{DateTime, Utc};
use kernel::{Cursor, PageLimit, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Identifier of a user (UUID v7).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = Uuid)]
pub struct UserId(Uuid);

impl UserId {
    /// A new, time-ordered id.
    pub fn generate() -> UserId {
        UserId(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for UserId {
    fn from(id: Uuid) -> UserId {
        UserId(id)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether an account may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// May sign in.
    Active,
    /// May not sign in; its refresh tokens are revoked.
    Disabled,
}

impl UserStatus {
    /// The status as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }
}

/// Which kinds of email a user has opted into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationPreferences {
    /// Order confirmations, shipping and payment news.
    pub order_updates: bool,
    /// New products and price changes.
    pub product_news: bool,
    /// Offers and newsletters.
    pub marketing: bool,
}

impl Default for NotificationPreferences {
    /// Transactional email on, promotional email off until the user opts in.
    fn default() -> NotificationPreferences {
        NotificationPreferences {
            order_updates: true,
            product_news: false,
            marketing: false,
        }
    }
}

/// A user account as the module returns it. Never carries the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// User id.
    pub id: UserId,
    /// Email address, in lower case.
    pub email: String,
    /// Name shown to people.
    pub display_name: String,
    /// Roles held.
    pub roles: Vec<Role>,
    /// Whether the account may sign in.
    pub status: UserStatus,
    /// Email opt-ins.
    pub notification_preferences: NotificationPreferences,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// When the account last changed.
    pub updated_at: DateTime<Utc>,
}

/// A registration. Roles and status are not accepted here: every new
/// account is an active customer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com", "password": "plum kettle orbit 42", "display_name": "Ada"}))]
pub struct NewUser {
    /// Email address in plain ASCII, at most 254 characters; unique,
    /// compared case-insensitively (stored in lower case).
    #[schema(
        max_length = 254,
        pattern = r"^[!-?A-~]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
    )]
    pub email: String,
    /// 12 to 256 characters (not counting surrounding spaces, a run of
    /// spaces counting as one), not a commonly used password and not your
    /// email address.
    #[schema(format = Password, min_length = 12, max_length = 256)]
    pub password: String,
    /// Name shown to people, 1 to 100 characters not counting surrounding
    /// whitespace, without control characters.
    #[schema(
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f])?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub display_name: String,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password never reaches a log line.
        f.debug_struct("NewUser")
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .field("display_name", &self.display_name)
            .finish()
    }
}

/// A role an admin may give an account: every `Role` but `service`,
/// which only the shop's own modules hold (only the schema of the `roles`
/// of `PATCH /api/v1/users/{id}`, which are `Role`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AssignableRole {
    /// Buys things.
    Customer,
    /// Runs the shop.
    Admin,
}

/// Which page of users to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListUsers {
    /// Most accounts on one page.
    pub limit: PageLimit,
    /// Where the previous page ended.
    pub cursor: Option<Cursor>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_email_schema_states_the_rule_the_user_module_checks() {
        let schema =
            serde_json::to_value(<super::NewUser as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(
            schema["properties"]["email"]["pattern"].as_str(),
            Some(kernel::patterns::EMAIL)
        );
    }
}
