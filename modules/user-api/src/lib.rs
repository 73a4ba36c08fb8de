//! Public contract of the user module. Other modules depend on this crate only.
//!
//! [`UserApi`] has two implementations: `user::UserModule` (in process) and
//! [`client::UserClient`] (over HTTP, feature `client`); the contract suite
//! in [`contract`] runs against both. Authentication itself (tokens, JWKS)
//! is not part of this trait: other modules verify tokens with the `auth`
//! crate and never call the user module to do so.

mod error;
pub mod events;
mod user;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "contract-tests")]
pub mod contract;

pub use error::UserError;
pub use user::{
    AssignableRole, ListUsers, NewUser, NotificationPreferences, User, UserId, UserStatus,
};

use kernel::{CallContext, Page};

/// Route prefixes (below `/api/v1`) served by the user module. A process
/// where the user module is remote forwards these to it.
pub const ROUTE_PREFIXES: &[&str] = &["/users", "/auth"];

/// Path of the user module's public keys, relative to its base URL.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// What other modules may ask of the user module.
///
/// Calls are authorised by the context's caller: a user may read
/// themselves, an admin anyone. Others' accounts are [`UserError::NotFound`],
/// never "forbidden", so ids cannot be probed.
#[async_trait::async_trait]
pub trait UserApi: Send + Sync {
    /// Registers a customer account.
    ///
    /// # Errors
    /// [`Failure::Validation`](kernel::Failure::Validation) (email, password policy, display name),
    /// [`UserError::EmailTaken`].
    async fn register(&self, cx: &CallContext, new: NewUser) -> Result<User, UserError>;

    /// One user: the caller themselves, or anyone for an admin.
    ///
    /// # Errors
    /// [`Failure::Unauthenticated`](kernel::Failure::Unauthenticated) without a caller,
    /// [`UserError::NotFound`] for a missing or someone else's account.
    async fn get_user(&self, cx: &CallContext, id: UserId) -> Result<User, UserError>;

    /// A page of users, oldest first. Admins only.
    ///
    /// # Errors
    /// [`Failure::Unauthenticated`](kernel::Failure::Unauthenticated), [`Failure::Forbidden`](kernel::Failure::Forbidden),
    /// [`Failure::InvalidCursor`](kernel::Failure::InvalidCursor).
    async fn list_users(&self, cx: &CallContext, query: ListUsers)
    -> Result<Page<User>, UserError>;
}
