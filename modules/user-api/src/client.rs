//! [`UserClient`]: `UserApi` over HTTP, for processes where the user module is remote.

use kernel::{CallContext, Page, ProblemBody};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::{ListUsers, NewUser, User, UserApi, UserError, UserId};

/// Talks to a user module served by another process, on behalf of the
/// context's caller (its bearer token is forwarded; the remote side
/// verifies it and authorises exactly as in process).
#[derive(Debug, Clone)]
pub struct UserClient {
    http: reqwest::Client,
    base: Url,
}

impl UserClient {
    /// A client for the user module served at `base`.
    pub fn new(http: reqwest::Client, base: Url) -> UserClient {
        UserClient { http, base }
    }

    fn request(&self, cx: &CallContext, method: Method, path: &str) -> RequestBuilder {
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

    async fn send<T: DeserializeOwned>(
        builder: RequestBuilder,
        user: Option<UserId>,
    ) -> Result<T, UserError> {
        let response = builder.send().await.map_err(|e| {
            UserError::Unavailable(if e.is_timeout() {
                "the user module did not answer in time".to_owned()
            } else {
                "cannot reach the user module".to_owned()
            })
        })?;
        let status = response.status();
        if status.is_success() {
            return response.json::<T>().await.map_err(|e| {
                UserError::Unexpected(format!("unreadable user module response: {e}"))
            });
        }
        match response.json::<ProblemBody>().await {
            Ok(problem) => Err(UserError::from_problem(problem, user)),
            Err(_)
                if matches!(
                    status,
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) =>
            {
                Err(UserError::Unavailable(format!(
                    "the user module answered {status}"
                )))
            }
            Err(_) => Err(UserError::Unexpected(format!(
                "the user module answered {status} without a problem body"
            ))),
        }
    }
}

#[async_trait::async_trait]
impl UserApi for UserClient {
    async fn register(&self, cx: &CallContext, new: NewUser) -> Result<User, UserError> {
        Self::send(self.request(cx, Method::POST, "/users").json(&new), None).await
    }

    async fn get_user(&self, cx: &CallContext, id: UserId) -> Result<User, UserError> {
        Self::send(
            self.request(cx, Method::GET, &format!("/users/{id}")),
            Some(id),
        )
        .await
    }

    async fn list_users(
        &self,
        cx: &CallContext,
        query: ListUsers,
    ) -> Result<Page<User>, UserError> {
        let mut params = vec![("limit", query.limit.get().to_string())];
        if let Some(cursor) = &query.cursor {
            params.push(("cursor", cursor.as_str().to_owned()));
        }
        Self::send(self.request(cx, Method::GET, "/users").query(&params), None).await
    }
}
