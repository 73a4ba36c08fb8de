//! [`UserClient`]: `UserApi` over HTTP, for processes where the user module is remote.

use kernel::{CallContext, Failure, Page};
use remote::{ModuleClient, RemoteError};
use reqwest::{Method, RequestBuilder};
use resilience::Policy;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use url::Url;

use crate::{ListUsers, NewUser, User, UserApi, UserError, UserId};

/// Talks to a user module served by another process, on behalf of the
/// context's caller (its bearer token is forwarded; the remote side
/// verifies it and authorises exactly as in process).
#[derive(Debug, Clone)]
pub struct UserClient {
    remote: ModuleClient,
}

impl UserClient {
    /// A client for the user module served at `base`.
    pub fn new(http: reqwest::Client, base: Url, policy: Arc<Policy>) -> UserClient {
        UserClient {
            remote: ModuleClient::new(http, base, "user", policy),
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        cx: &CallContext,
        idempotent: bool,
        builder: RequestBuilder,
        user: Option<UserId>,
    ) -> Result<T, UserError> {
        self.remote
            .send(cx, builder, idempotent)
            .await
            .map_err(|e| match e {
                RemoteError::Problem(problem) => UserError::from_problem(problem, user),
                RemoteError::Unavailable(reason) => UserError::Common(Failure::Unavailable(reason)),
                RemoteError::Degraded(d) => UserError::Common(Failure::Degraded(d)),
                RemoteError::Unexpected(reason) => UserError::Common(Failure::Unexpected(reason)),
            })
    }
}

#[async_trait::async_trait]
impl UserApi for UserClient {
    async fn register(&self, cx: &CallContext, new: NewUser) -> Result<User, UserError> {
        self.send(
            cx,
            false,
            self.remote.request(cx, Method::POST, "/users").json(&new),
            None,
        )
        .await
    }

    async fn get_user(&self, cx: &CallContext, id: UserId) -> Result<User, UserError> {
        self.send(
            cx,
            true,
            self.remote
                .request(cx, Method::GET, &format!("/users/{id}")),
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
        self.send(
            cx,
            true,
            self.remote
                .request(cx, Method::GET, "/users")
                .query(&params),
            None,
        )
        .await
    }
}
