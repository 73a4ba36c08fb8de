//! HTTP plumbing every module's routes share.
//!
//! - [`problem`]: RFC 9457 `application/problem+json` for every error, the
//!   extractor configs that make actix's own errors problems too, and the
//!   safety net that rewrites any other error body.
//! - [`observe`]: request ids, the root tracing span, one access-log line and
//!   the HTTP metrics per request.
//! - [`RequestCx`]: the caller's [`kernel::CallContext`] as an extractor.
//! - [`PageQuery`]: `limit` and `cursor` of list endpoints.
//! - [`Routes`]: where a module's routes go (a server worker, or the OpenAPI
//!   document).
//! - [`text`]: a NUL character in a query or JSON body is a 422, before any
//!   handler (PostgreSQL cannot store it).

mod context;
pub mod deadline;
pub mod etag;
pub mod observe;
mod page;
pub mod problem;
pub mod ratelimit;
mod routes;
pub mod security;
pub mod text;

pub use context::{RequestCx, bearer_token};
pub use observe::{RequestIdRootSpan, current_request_id};
pub use page::{PageQuery, whole_number};
pub use problem::{ApiError, Problem};
pub use routes::Routes;
