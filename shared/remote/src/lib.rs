//! Calls to a module served by another process, shared by every `-api`
//! crate's HTTP client.
//!
//! [`ModuleClient`] turns a [`CallContext`] into headers (`x-request-id`,
//! the caller's bearer token) and a timeout (the context's deadline), and
//! sorts answers into a body, a problem (for the `-api` crate to map back to
//! its error enum) or unavailability. The resilience policies (retries,
//! circuit breaker, bulkhead) belong here too, so every client gets them.

use kernel::{CallContext, ProblemBody};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

/// A failed call, before the `-api` crate maps it to its own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteError {
    /// The module answered with an RFC 9457 problem.
    Problem(ProblemBody),
    /// The module could not be reached, timed out, or said 502/503/504.
    Unavailable(String),
    /// Anything else: an unreadable answer.
    Unexpected(String),
}

/// The HTTP side of one remote module.
#[derive(Debug, Clone)]
pub struct ModuleClient {
    http: reqwest::Client,
    base: Url,
    module: &'static str,
}

impl ModuleClient {
    /// A client for `module` served at `base` (`http://catalog:8080`).
    pub fn new(http: reqwest::Client, base: Url, module: &'static str) -> ModuleClient {
        ModuleClient { http, base, module }
    }

    /// A request to `/api/v1{path}` on behalf of `cx`.
    pub fn request(&self, cx: &CallContext, method: Method, path: &str) -> RequestBuilder {
        let url = format!("{}/api/v1{path}", self.base.as_str().trim_end_matches('/'));
        let mut builder = self
            .http
            .request(method, url)
            .header("x-request-id", cx.request_id().as_str());
        if let Some(token) = cx.bearer_token() {
            builder = builder.bearer_auth(token);
        }
        if let Some(remaining) = cx.remaining() {
            builder = builder.timeout(remaining);
        }
        builder
    }

    /// Sends and reads a JSON answer.
    ///
    /// # Errors
    /// [`RemoteError`] saying how the call failed.
    pub async fn send<T: DeserializeOwned>(
        &self,
        builder: RequestBuilder,
    ) -> Result<T, RemoteError> {
        let module = self.module;
        let response = builder.send().await.map_err(|e| {
            RemoteError::Unavailable(if e.is_timeout() {
                format!("the {module} module did not answer in time")
            } else if e.is_connect() {
                format!("cannot connect to the {module} module")
            } else {
                format!("the call to the {module} module failed: {e}")
            })
        })?;
        let status = response.status();
        if status.is_success() {
            return response.json::<T>().await.map_err(|e| {
                RemoteError::Unexpected(format!("unreadable {module} response: {e}"))
            });
        }
        match response.json::<ProblemBody>().await {
            Ok(problem) => Err(RemoteError::Problem(problem)),
            Err(_)
                if matches!(
                    status,
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) =>
            {
                Err(RemoteError::Unavailable(format!(
                    "the {module} module answered {status}"
                )))
            }
            Err(_) => Err(RemoteError::Unexpected(format!(
                "the {module} module answered {status} without a problem body"
            ))),
        }
    }
}
