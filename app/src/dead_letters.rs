//! Dead letters kept by other processes: a process forwarding an
//! event-handling module (a gateway) asks the process serving it, so that
//! `/api/v1/admin/dead-letters` lists and redrives every module's dead
//! letters wherever the request lands ([`events::http::Elsewhere`]).
//!
//! Each call asks with `scope=process` (the process asked answers for its
//! own modules and asks no one else) and goes through the module's policy
//! like any other call to it: deadline, breaker, bulkhead; lists are
//! retried, redrives are not (a redrive runs a handler).

use actix_web::http::StatusCode;
use async_trait::async_trait;
use events::DeadLetter;
use events::http::{Elsewhere, ROUTE_PREFIX};
use kernel::{CallContext, Cursor, Page, PageLimit};
use remote::{ModuleClient, RemoteError};
use reqwest::Method;
use url::Url;
use uuid::Uuid;
use web::Problem;

use crate::compose::{Dependency, Policies};
use crate::modules::ModuleName;

/// The processes serving this process's remote event-handling modules.
pub(crate) struct Processes {
    processes: Vec<Process>,
}

/// One process, with the event-handling modules it serves for us.
struct Process {
    /// Their names, for messages (`catalog and notification`).
    modules: String,
    client: ModuleClient,
}

impl Processes {
    /// The processes behind `remotes` that serve a module handling events
    /// (one per URL, whichever of its modules it serves); `None` when
    /// there is none.
    pub(crate) fn new(
        remotes: &[(ModuleName, Url)],
        http: &reqwest::Client,
        policies: &Policies,
    ) -> Option<Processes> {
        let mut processes: Vec<(Url, Vec<ModuleName>)> = Vec::new();
        for (module, url) in remotes {
            if module.subscribes().is_empty() {
                continue;
            }
            match processes.iter_mut().find(|(at, _)| at == url) {
                Some((_, modules)) => modules.push(*module),
                None => processes.push((url.clone(), vec![*module])),
            }
        }
        let processes: Vec<Process> = processes
            .into_iter()
            .map(|(url, modules)| {
                let first = modules[0];
                Process {
                    modules: modules
                        .iter()
                        .map(|m| m.as_str())
                        .collect::<Vec<_>>()
                        .join(" and "),
                    client: ModuleClient::new(
                        http.clone(),
                        url,
                        first.as_str(),
                        policies.get(Dependency::Module(first)),
                    ),
                }
            })
            .collect();
        (!processes.is_empty()).then_some(Processes { processes })
    }
}

impl Process {
    /// The problem a failed call turns into: the module's own degradation
    /// (breaker open, bulkhead full, out of time) as it is, anything else
    /// 503 `events_unavailable` naming the modules (the cause is logged).
    fn failed(&self, error: RemoteError) -> Problem {
        if let RemoteError::Degraded(degradation) = &error {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                degradation.code(),
                format!("the dead letters of the {}: {degradation}", self.modules),
            )
            .with_retry_after(degradation.retry_after());
        }
        tracing::warn!(modules = %self.modules, error = ?error, "dead letters of another process unavailable");
        // What the process said, when it said something (not its URL).
        let answered = match &error {
            RemoteError::Problem(problem) => {
                format!(": it answered {} `{}`", problem.status, problem.code)
            }
            _ => String::new(),
        };
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "events_unavailable",
            format!(
                "the dead letters of the {} module cannot be read now{answered}",
                self.modules
            ),
        )
    }
}

#[async_trait]
impl Elsewhere for Processes {
    async fn list(
        &self,
        cx: &CallContext,
        cursor: Option<&Cursor>,
        limit: PageLimit,
    ) -> Result<Vec<Page<DeadLetter>>, Problem> {
        let limit = limit.get().to_string();
        let calls = self.processes.iter().map(|process| {
            let mut query = vec![("scope", "process"), ("limit", limit.as_str())];
            if let Some(cursor) = cursor {
                query.push(("cursor", cursor.as_str()));
            }
            let request = process
                .client
                .request(cx, Method::GET, ROUTE_PREFIX)
                .query(&query);
            async move {
                process
                    .client
                    .send::<Page<DeadLetter>>(cx, request, true)
                    .await
                    .map_err(|e| process.failed(e))
            }
        });
        futures_util::future::try_join_all(calls).await
    }

    async fn redrive(
        &self,
        cx: &CallContext,
        id: Uuid,
    ) -> Result<Option<Result<(), Problem>>, Problem> {
        // Every process is asked until one holds it: one that cannot be
        // asked does not hide the letter held by the next.
        let mut unreachable = None;
        for process in &self.processes {
            let request = process
                .client
                .request(cx, Method::POST, &format!("{ROUTE_PREFIX}/{id}/redrive"))
                .query(&[("scope", "process")]);
            match process
                .client
                .send::<serde::de::IgnoredAny>(cx, request, false)
                .await
            {
                Ok(_) => return Ok(Some(Ok(()))),
                // Not held there (or no dead letters there at all).
                Err(RemoteError::Problem(problem)) if problem.status == 404 => {}
                // Its answer, as it gave it: the handler failed again (409),
                // or it refused the request.
                Err(RemoteError::Problem(problem)) if (400..500).contains(&problem.status) => {
                    let status =
                        StatusCode::from_u16(problem.status).unwrap_or(StatusCode::CONFLICT);
                    let detail = problem.detail.unwrap_or(problem.title);
                    return Ok(Some(Err(Problem::new(status, &problem.code, detail))));
                }
                Err(error) => {
                    let failed = process.failed(error);
                    unreachable.get_or_insert(failed);
                }
            }
        }
        unreachable.map_or(Ok(None), Err)
    }
}
