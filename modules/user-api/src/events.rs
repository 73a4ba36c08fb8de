//! Events the user module publishes. Wire contracts: add optional fields,
//! never rename or remove.

use kernel::IntegrationEvent;
use serde::{Deserialize, Serialize};

use crate::{NotificationPreferences, UserId, UserStatus};

/// An account was registered (customer or admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    /// The account's id.
    pub user_id: UserId,
    /// Its email address.
    pub email: String,
    /// Its display name.
    pub display_name: String,
    /// Its email opt-ins.
    pub notification_preferences: NotificationPreferences,
    /// The account's version: one up with every change of the account (1:
    /// registered), so the higher of two events is the newer state. Events
    /// can arrive out of order (several consumers of a broker queue, a
    /// requeued or redriven message): keep, per field, the highest seen.
    /// Optional: absent from events published before it was added (older
    /// than any event that has it).
    #[serde(default)]
    pub version: Option<i64>,
}

impl IntegrationEvent for UserRegistered {
    const TYPE: &'static str = "user.registered.v1";
    fn aggregate_id(&self) -> String {
        self.user_id.to_string()
    }
}

/// An account's email address changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEmailChanged {
    /// The account's id.
    pub user_id: UserId,
    /// The address before.
    pub old_email: String,
    /// The address now.
    pub new_email: String,
    /// The account's version: one up with every change of the account (1:
    /// registered), so the higher of two events is the newer state. Events
    /// can arrive out of order (several consumers of a broker queue, a
    /// requeued or redriven message): keep, per field, the highest seen.
    /// Optional: absent from events published before it was added (older
    /// than any event that has it).
    #[serde(default)]
    pub version: Option<i64>,
}

impl IntegrationEvent for UserEmailChanged {
    const TYPE: &'static str = "user.email_changed.v1";
    fn aggregate_id(&self) -> String {
        self.user_id.to_string()
    }
}

/// An account's email opt-ins changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPreferencesChanged {
    /// The account's id.
    pub user_id: UserId,
    /// The opt-ins now.
    pub notification_preferences: NotificationPreferences,
    /// The account's version: one up with every change of the account (1:
    /// registered), so the higher of two events is the newer state. Events
    /// can arrive out of order (several consumers of a broker queue, a
    /// requeued or redriven message): keep, per field, the highest seen.
    /// Optional: absent from events published before it was added (older
    /// than any event that has it).
    #[serde(default)]
    pub version: Option<i64>,
}

impl IntegrationEvent for UserPreferencesChanged {
    const TYPE: &'static str = "user.preferences_changed.v1";
    fn aggregate_id(&self) -> String {
        self.user_id.to_string()
    }
}

/// An account's display name changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDisplayNameChanged {
    /// The account's id.
    pub user_id: UserId,
    /// The name now.
    pub display_name: String,
    /// The account's version (as in [`UserRegistered::version`]; always
    /// present: the event is newer than versions).
    pub version: i64,
}

impl IntegrationEvent for UserDisplayNameChanged {
    const TYPE: &'static str = "user.display_name_changed.v1";
    fn aggregate_id(&self) -> String {
        self.user_id.to_string()
    }
}

/// An admin disabled an account, or enabled it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStatusChanged {
    /// The account's id.
    pub user_id: UserId,
    /// The status now.
    pub status: UserStatus,
    /// The account's version (as in [`UserRegistered::version`]; always
    /// present: the event is newer than versions).
    pub version: i64,
}

impl IntegrationEvent for UserStatusChanged {
    const TYPE: &'static str = "user.status_changed.v1";
    fn aggregate_id(&self) -> String {
        self.user_id.to_string()
    }
}
