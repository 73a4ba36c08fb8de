//! The bodies of the user and auth routes: what a client sends to change an
//! account or sign in, and the tokens it gets back.

use kernel::Role;
use serde::{Deserialize, Serialize};
use user_api::{NotificationPreferences, UserStatus};
use utoipa::ToSchema;

/// Changes to your own account. Roles and status cannot be changed here.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MePatch {
    /// New display name, 1 to 100 characters not counting surrounding
    /// whitespace, without control characters.
    #[schema(
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,98}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00-\x1f\x7f-\x9f])?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub(super) display_name: Option<String>,
    /// New email address in plain ASCII, at most 254 characters; needs
    /// `current_password`.
    #[schema(
        max_length = 254,
        pattern = r"^[!-?A-~]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
    )]
    pub(super) email: Option<String>,
    /// Your password, to confirm an email change.
    #[schema(format = Password)]
    pub(super) current_password: Option<String>,
    /// Email opt-ins.
    #[serde(default, deserialize_with = "kernel::json::object_option")]
    pub(super) notification_preferences: Option<NotificationPreferences>,
}

/// A password change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// Your current password.
    #[schema(format = Password)]
    pub(super) current_password: String,
    /// The new password (same policy as at registration: 12 to 256
    /// characters, not counting surrounding spaces, a run of spaces counting
    /// as one; not a commonly used one, not your email address).
    #[schema(format = Password, min_length = 12, max_length = 256)]
    pub(super) new_password: String,
}

/// What an admin may change on an account.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminPatch {
    /// New roles (at least one; `service` is no user's).
    #[schema(value_type = Option<Vec<user_api::AssignableRole>>, min_items = 1)]
    pub(super) roles: Option<Vec<Role>>,
    /// `disabled` signs the user out (refresh tokens revoked) and refuses sign-ins.
    pub(super) status: Option<UserStatus>,
}

/// Email and password, to sign in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com", "password": "plum kettle orbit 42"}))]
pub struct Credentials {
    /// Account email.
    pub(super) email: String,
    /// Account password.
    #[schema(format = Password)]
    pub(super) password: String,
}

/// An opaque refresh token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last sign-in or refresh.
    pub(super) refresh_token: String,
}

/// Tokens, as OAuth 2.0 returns them (RFC 6749 §5.1).
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// Short-lived JWT for `Authorization: Bearer`.
    pub(super) access_token: String,
    /// Single-use token for `POST /api/v1/auth/refresh`.
    pub(super) refresh_token: String,
    /// Always `Bearer`.
    pub(super) token_type: &'static str,
    /// Seconds until the access token expires.
    pub(super) expires_in: u64,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_email_schema_states_the_rule_the_user_module_checks() {
        let schema =
            serde_json::to_value(<super::MePatch as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(
            schema["properties"]["email"]["pattern"].as_str(),
            Some(kernel::patterns::EMAIL)
        );
    }
}
