//! Shared kernel: the small vocabulary every crate speaks.
//!
//! Money, request context, pagination and the error vocabulary that crosses
//! module boundaries. Depends on nothing in the workspace and on no web or
//! database crate, so `-api` crates can use it freely.

mod context;
mod error;
mod event;
mod failure;
mod identity;
pub mod json;
mod money;
pub mod observe;
mod order;
mod page;
pub mod patterns;

pub use context::{CallContext, RequestId};
pub use error::{Degradation, FieldError, ModuleError, ProblemBody, ProblemCode};
pub use event::{Envelope, IntegrationEvent};
pub use failure::Failure;
pub use identity::{Caller, Role};
pub use money::{Currency, Money, MoneyError};
pub use order::OrderId;
pub use page::{Cursor, CursorError, Page, PageLimit, PageLimitError};
