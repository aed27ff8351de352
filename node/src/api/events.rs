//! The routes of issue 15: `POST /v1/tags` (change this node's tags) and `GET /v1/events`
//! (the event stream as JSON lines). `GET /v1/members?tag=KEY=PATTERN` filtering is done by
//! the CLI over the member list (`hearsay members --tag`).

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::BTreeMap;
use tokio::sync::broadcast;

use super::error::ApiError;
use super::server::ApiState;
use super::types::{Event, TagsRequest};
use crate::agent::Command;
use crate::agent::events::dropped_event;

/// The routes, merged into [`super::server::router`].
pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/tags", get(tags).post(set_tags)).route("/v1/events", get(events))
}

async fn tags(State(s): State<ApiState>) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    let none = (BTreeMap::new(), Vec::new());
    Ok(Json(s.ask(|reply| Command::SetTags { set: none.0, delete: none.1, reply }).await??))
}

async fn set_tags(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    let TagsRequest { set, delete } =
        serde_json::from_slice(&body?).map_err(|source| ApiError::Json { endpoint: "tags", source })?;
    let tags = s.ask(|reply| Command::SetTags { set, delete, reply }).await??;
    Ok(Json(tags))
}

/// One JSON line.
fn line(e: &Event) -> Bytes {
    let mut v = serde_json::to_vec(e).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

async fn events(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let rx = s.ask(Command::Events).await?;
    let lines = event_lines(rx);
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

/// The events of `rx` as lines, an `events-dropped` line where the reader fell behind; ends
/// when the agent stops.
fn event_lines(
    rx: broadcast::Receiver<Event>,
) -> impl tokio_stream::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(async move {
        let mut rx = rx;
        loop {
            let next = tokio::select! {
                r = rx.recv() => r,
                () = tx.closed() => return,
            };
            let item = match next {
                Ok(e) => line(&e),
                Err(broadcast::error::RecvError::Lagged(n)) => line(&dropped_event(n)),
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(Ok(item)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(out)
}
