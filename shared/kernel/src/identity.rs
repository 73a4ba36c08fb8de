//! Who is calling: the verified identity a request or a module call carries.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// What a user may do. A user holds one or more roles.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Buys things; sees only their own orders, payments and notifications.
    Customer,
    /// Runs the shop: catalog, stock, users.
    Admin,
    /// Another module of the shop calling on its own behalf (the order
    /// module reserving stock, taking payments). Never held by a user:
    /// only tokens signed with the service key carry it.
    Service,
}

impl Role {
    /// The role's name on the wire and in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "customer" => Ok(Role::Customer),
            "admin" => Ok(Role::Admin),
            "service" => Ok(Role::Service),
            other => Err(format!("unknown role `{other}`")),
        }
    }
}

/// A verified caller: the subject of a valid access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user's id.
    pub user_id: Uuid,
    /// The user's roles when the token was issued.
    pub roles: Vec<Role>,
}

impl Caller {
    /// Whether the caller holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the caller may act on resources owned by `owner`: their own,
    /// or anyone's for an admin or another module.
    pub fn may_access(&self, owner: Uuid) -> bool {
        self.user_id == owner || self.has(Role::Admin) || self.has(Role::Service)
    }

    /// Another module of the shop, calling on its own behalf.
    pub fn service() -> Caller {
        Caller {
            user_id: Uuid::nil(),
            roles: vec![Role::Service],
        }
    }

    /// Whether the caller is an admin or a module of the shop.
    pub fn is_admin_or_service(&self) -> bool {
        self.has(Role::Admin) || self.has(Role::Service)
    }
}
