//! Admin routes over dead letters: list them, redrive one.
//!
//! Dead letters live with the module whose handler gave up, in its own
//! schema, so each process holds those of the modules it serves. A process
//! that forwards an event-handling module to another process (a gateway)
//! gathers that process's dead letters with its own: the list merges them,
//! a redrive goes to whichever process holds the letter ([`Elsewhere`]).
//! It asks them with `scope=process`, so a process never asks further: no
//! request goes round a loop of misconfigured forwards.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Json, Path, Query};
use actix_web::{HttpResponse, get, post};
use async_trait::async_trait;
use auth::AdminOnly;
use kernel::{CallContext, Cursor, Page, PageLimit, ProblemBody};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use web::{PageQuery, Problem, RequestCx};

use crate::{DeadLetter, Dispatcher};

/// The routes' prefix (below `/api/v1`), for forwarding.
pub const ROUTE_PREFIX: &str = "/admin/dead-letters";

/// Registers the routes (relative to `/api/v1`). They read the
/// [`Dispatcher`] of this process's modules and the [`Elsewhere`] of the
/// modules it forwards, each from the app data when there is one.
pub fn configure(cfg: &mut web::Routes<'_, '_>) {
    cfg.service(list_dead_letters).service(redrive_dead_letter);
}

/// The dead letters of event-handling modules served by other processes,
/// as the process forwarding to them reaches them.
#[async_trait]
pub trait Elsewhere: Send + Sync {
    /// Each other process's page of open dead letters after `cursor` (at
    /// most `limit`, oldest first), asked with `scope=process`.
    ///
    /// # Errors
    /// A problem (503) when one of them cannot be read: a list missing
    /// some letters would look complete.
    async fn list(
        &self,
        cx: &CallContext,
        cursor: Option<&Cursor>,
        limit: PageLimit,
    ) -> Result<Vec<Page<DeadLetter>>, Problem>;

    /// Redrives `id` at the process holding it: `None` when none holds it
    /// open; else that process's answer (`Err`: its problem, such as 409
    /// `redrive_failed`).
    ///
    /// # Errors
    /// A problem (503) when no process holds it and one of them cannot be
    /// asked.
    async fn redrive(
        &self,
        cx: &CallContext,
        id: Uuid,
    ) -> Result<Option<Result<(), Problem>>, Problem>;
}

/// Whose dead letters a request is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterScope {
    /// Every event-handling module's, wherever it runs: the process
    /// answering gathers those of the processes it forwards to.
    #[default]
    All,
    /// Only those of the modules this process serves (what a gateway asks
    /// the processes behind it).
    Process,
}

/// Query parameters of the dead-letter list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "web::whole_number")]
    limit: Option<i64>,
    /// `next_cursor` of the previous page; omit for the first page.
    #[param(min_length = 1, pattern = r"^[A-Za-z0-9_-]+$")]
    cursor: Option<String>,
    /// `all` (default): the dead letters of every module that handles
    /// events, wherever it runs; `process`: only those of the modules the
    /// process answering serves.
    #[param(inline)]
    scope: Option<DeadLetterScope>,
}

/// Query parameters of a redrive.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RedriveQuery {
    /// `all` (default): wherever the dead letter is; `process`: only
    /// among those of the modules the process answering serves.
    #[param(inline)]
    scope: Option<DeadLetterScope>,
}

/// The 503 of both routes, in the spec.
const UNAVAILABLE: &str = "The dead letters cannot be read now, here or at the process serving \
    a module that handles events (`events_unavailable`), the call to that process was cut \
    short (`dependency_circuit_open`, `dependency_overloaded`, `deadline_exceeded`), or the \
    token keys do not answer (`auth_unavailable`)";

fn unavailable(e: impl std::fmt::Display) -> Problem {
    tracing::warn!(error = %e, "dead letters unavailable");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "events_unavailable",
        "the dead letters cannot be read now",
    )
}

/// Events a handler gave up on, oldest first, whichever process holds
/// them. Admin only.
#[utoipa::path(
    tag = "events",
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "A page of open dead letters", body = Page<DeadLetter>),
        (status = 401, description = "No valid token", body = ProblemBody),
        (status = 403, description = "Not an admin", body = ProblemBody),
        (status = 503, description = UNAVAILABLE, body = ProblemBody,
            headers(("retry-after" = String, description = "Seconds to wait before trying again"))),
    ),
    security(("bearer" = ["admin"])),
)]
#[get("/admin/dead-letters")]
pub async fn list_dead_letters(
    dispatcher: Option<Data<Dispatcher>>,
    elsewhere: Option<Data<dyn Elsewhere>>,
    _admin: AdminOnly,
    cx: RequestCx,
    query: Query<DeadLetterQuery>,
) -> Result<Json<Page<DeadLetter>>, Problem> {
    let query = query.into_inner();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let (limit, cursor) = page.parse()?;
    let after = Cursor::after_id(cursor.as_ref()).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            "the cursor is not valid for this list",
        )
    })?;
    let mut items = match &dispatcher {
        Some(dispatcher) => dispatcher
            .dead_letters(after, limit.overfetch())
            .await
            .map_err(unavailable)?,
        None => Vec::new(),
    };
    let mut more = false;
    if let (Some(elsewhere), DeadLetterScope::All) = (&elsewhere, query.scope.unwrap_or_default()) {
        for page in elsewhere.list(&cx.0, cursor.as_ref(), limit).await? {
            more |= page.next_cursor.is_some();
            items.extend(page.items);
        }
    }
    Ok(Json(Page::merged(items, limit, more, |d| d.id)))
}

/// Outcome of a redrive.
#[derive(Serialize, ToSchema)]
pub struct Redriven {
    /// The dead letter.
    id: Uuid,
    /// `redriven`: handled this time, closed.
    status: &'static str,
}

/// Run a dead letter's handler once more, in the process that holds it.
/// Admin only.
#[utoipa::path(
    tag = "events",
    params(("id" = Uuid, Path, description = "Dead letter id"), RedriveQuery),
    responses(
        (status = 200, description = "Handled this time; the dead letter is closed", body = Redriven),
        (status = 404, description = "No such open dead letter", body = ProblemBody),
        (status = 409, description = "The handler failed again; the dead letter stays open with the new error", body = ProblemBody),
        (status = 503, description = UNAVAILABLE, body = ProblemBody,
            headers(("retry-after" = String, description = "Seconds to wait before trying again"))),
    ),
    security(("bearer" = ["admin"])),
)]
#[post("/admin/dead-letters/{id}/redrive")]
pub async fn redrive_dead_letter(
    dispatcher: Option<Data<Dispatcher>>,
    elsewhere: Option<Data<dyn Elsewhere>>,
    _admin: AdminOnly,
    cx: RequestCx,
    id: Path<Uuid>,
    query: Query<RedriveQuery>,
) -> Result<HttpResponse, Problem> {
    let id = id.into_inner();
    let here = match &dispatcher {
        Some(dispatcher) => dispatcher.redrive(id).await.map_err(unavailable)?,
        None => None,
    };
    let outcome = match (here, &elsewhere, query.scope.unwrap_or_default()) {
        (Some(Ok(())), _, _) => Ok(()),
        (Some(Err(error)), _, _) => Err(Problem::new(
            StatusCode::CONFLICT,
            "redrive_failed",
            format!("the handler failed again: {error}"),
        )),
        (None, Some(elsewhere), DeadLetterScope::All) => {
            match elsewhere.redrive(&cx.0, id).await? {
                Some(outcome) => outcome,
                None => return Err(not_found(id)),
            }
        }
        (None, _, _) => return Err(not_found(id)),
    };
    outcome?;
    Ok(HttpResponse::Ok().json(Redriven {
        id,
        status: "redriven",
    }))
}

fn not_found(id: Uuid) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "dead_letter_not_found",
        format!("no open dead letter `{id}`"),
    )
}
