//! A request's body must arrive within a deadline of its head.
//!
//! actix-web times the request head (`client_request_timeout`) and idle
//! connections (`keep_alive`), but not a body: a client that announces
//! 256 KiB and sends a little of it, then nothing, would hold its
//! connection and the part read for ever, and a few hundred such clients
//! the process's memory. [`middleware`] gives every body a deadline
//! ([`BodyTimeout`], `server.body_timeout_ms`) counted from the head; a
//! body not read whole by then ends in an error every reader of it maps to
//! 408 `request_timeout` ([`body_problem`]), and the connection is closed.
//! A request without a body is not touched.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{Error, HttpMessage as _};
use futures_util::Stream;

use crate::Problem;

/// How long after its head a request's body may take to arrive (app data).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// Puts the [`BodyTimeout`] of the app's data on the body of every request
/// that has one (a `Content-Length` or a `Transfer-Encoding`).
///
/// # Errors
/// Only those of the inner service.
pub async fn middleware<B: MessageBody>(
    mut request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, Error> {
    let has_body = request.headers().contains_key(TRANSFER_ENCODING)
        || request
            .headers()
            .get(CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    if has_body && let Some(timeout) = request.app_data::<BodyTimeout>().copied() {
        let inner = request.take_payload();
        request.set_payload(timed(inner, timeout.0));
    }
    next.call(request).await
}

/// `inner`, ending in a [`timed_out`] error `timeout` from now.
fn timed(inner: Payload, timeout: Duration) -> Payload {
    let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(Deadline {
        inner,
        sleep: Box::pin(tokio::time::sleep(timeout)),
        expired: false,
    });
    Payload::from(stream)
}

/// A body that ends in a [`timed_out`] error once its deadline passed.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.expired = true;
                    Poll::Ready(Some(Err(timed_out())))
                }
                Poll::Pending => Poll::Pending,
            },
            ready => ready,
        }
    }
}

fn timed_out() -> PayloadError {
    PayloadError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        "the body did not arrive in time",
    ))
}

/// Whether `error` is a body's deadline passing ([`middleware`]).
pub fn is_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(e) if e.kind() == io::ErrorKind::TimedOut)
}

/// The problem for a body that could not be read (`error`, from reading
/// it as `Bytes` or `String`): 408 `request_timeout` when its deadline
/// passed, 413 `payload_too_large` over the size limit, 400
/// `malformed_body` otherwise.
pub fn body_problem(error: &Error) -> Problem {
    let payload = error.as_error::<PayloadError>();
    if payload.is_some_and(is_timeout) {
        return timeout_problem();
    }
    if error.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is larger than the limit",
        );
    }
    Problem::new(
        StatusCode::BAD_REQUEST,
        "malformed_body",
        format!("the body could not be read: {error}"),
    )
}

/// 408 `request_timeout`: the body did not arrive within its deadline.
pub fn timeout_problem() -> Problem {
    Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request's body did not arrive in time; send it again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{App, HttpResponse, test, web};
    use futures_util::StreamExt as _;

    async fn echo(body: Result<Bytes, Error>) -> HttpResponse {
        match body {
            Ok(body) => HttpResponse::Ok().body(body),
            Err(e) => actix_web::ResponseError::error_response(&body_problem(&e)),
        }
    }

    /// A first chunk of a body, then nothing: the client went quiet.
    fn stalled() -> Payload {
        let chunk = Bytes::from_static(b"{\"a\":");
        let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(
            futures_util::stream::once(async move { Ok(chunk) })
                .chain(futures_util::stream::pending()),
        );
        Payload::from(stream)
    }

    #[actix_web::test]
    async fn a_body_that_stops_coming_is_a_408_at_its_deadline() {
        let (request, _) = test::TestRequest::post().to_http_parts();
        let mut payload = timed(stalled(), Duration::from_millis(50));
        let read = <Bytes as actix_web::FromRequest>::from_request(&request, &mut payload).await;
        let Err(error) = read else {
            panic!("a stalled body was read");
        };
        let problem = body_problem(&error);
        assert_eq!(problem.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(problem.body().code, "request_timeout");
    }

    #[actix_web::test]
    async fn a_body_that_arrives_in_time_is_read_whole() {
        let app = test::init_service(
            App::new()
                .app_data(BodyTimeout(Duration::from_secs(5)))
                .wrap(actix_web::middleware::from_fn(middleware))
                .route("/", web::post().to(echo)),
        )
        .await;
        let request = test::TestRequest::post()
            .uri("/")
            .insert_header((CONTENT_LENGTH, "5"))
            .set_payload("hello")
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            test::read_body(response).await,
            Bytes::from_static(b"hello")
        );
    }

    #[actix_web::test]
    async fn the_deadline_ends_the_stream() {
        let mut deadline = Deadline {
            inner: stalled(),
            sleep: Box::pin(tokio::time::sleep(Duration::from_millis(10))),
            expired: false,
        };
        assert!(matches!(deadline.next().await, Some(Ok(_))));
        assert!(matches!(deadline.next().await, Some(Err(ref e)) if is_timeout(e)));
        assert!(deadline.next().await.is_none());
    }
}
