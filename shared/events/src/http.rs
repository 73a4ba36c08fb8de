//! Admin routes over dead letters: list them, redrive one.

use actix_web::http::StatusCode;
use actix_web::web::{Data, Json, Path, Query};
use actix_web::{HttpResponse, get, post};
use auth::AdminOnly;
use kernel::{Cursor, Page, ProblemBody};
use serde::Serialize;
use uuid::Uuid;
use web::{PageQuery, Problem};

use crate::{DeadLetter, Dispatcher};

/// The routes' prefix (below `/api/v1`), for forwarding.
pub const ROUTE_PREFIX: &str = "/admin/dead-letters";

/// Registers the routes (relative to `/api/v1`).
pub fn configure(cfg: &mut web::Routes<'_, '_>) {
    cfg.service(list_dead_letters).service(redrive_dead_letter);
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    tracing::warn!(error = %e, "dead letters unavailable");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "events_unavailable",
        "the dead letters cannot be read now",
    )
}

/// Events a handler gave up on, oldest first. Admin only.
#[utoipa::path(
    tag = "events",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of open dead letters", body = Page<DeadLetter>),
        (status = 401, description = "No valid token", body = ProblemBody),
        (status = 403, description = "Not an admin", body = ProblemBody),
    ),
    security(("bearer" = ["admin"])),
)]
#[get("/admin/dead-letters")]
pub async fn list_dead_letters(
    dispatcher: Data<Dispatcher>,
    _admin: AdminOnly,
    query: Query<PageQuery>,
) -> Result<Json<Page<DeadLetter>>, Problem> {
    let (limit, cursor) = query.parse()?;
    let after = Cursor::after_id(cursor.as_ref()).map_err(|_| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            "the cursor is not valid for this list",
        )
    })?;
    let items = dispatcher
        .dead_letters(after, limit.overfetch())
        .await
        .map_err(unavailable)?;
    Ok(Json(Page::from_overfetch(items, limit, |d| d.id)))
}

/// Outcome of a redrive.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Redriven {
    /// The dead letter.
    id: Uuid,
    /// `redriven`: handled this time, closed.
    status: &'static str,
}

/// Run a dead letter's handler once more. Admin only.
#[utoipa::path(
    tag = "events",
    params(("id" = Uuid, Path, description = "Dead letter id")),
    responses(
        (status = 200, description = "Handled this time; the dead letter is closed", body = Redriven),
        (status = 404, description = "No such open dead letter", body = ProblemBody),
        (status = 409, description = "The handler failed again; the dead letter stays open with the new error", body = ProblemBody),
    ),
    security(("bearer" = ["admin"])),
)]
#[post("/admin/dead-letters/{id}/redrive")]
pub async fn redrive_dead_letter(
    dispatcher: Data<Dispatcher>,
    _admin: AdminOnly,
    id: Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let id = id.into_inner();
    match dispatcher.redrive(id).await.map_err(unavailable)? {
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "dead_letter_not_found",
            format!("no open dead letter `{id}`"),
        )),
        Some(Ok(())) => Ok(HttpResponse::Ok().json(Redriven {
            id,
            status: "redriven",
        })),
        Some(Err(error)) => Err(Problem::new(
            StatusCode::CONFLICT,
            "redrive_failed",
            format!("the handler failed again: {error}"),
        )),
    }
}
