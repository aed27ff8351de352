//! The axum routes of the local API.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::Command;
use super::types::*;
use crate::filter::Filter;

/// How long the API waits for a query to converge before answering 504.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Shared state of the handlers: the way to the actor.
#[derive(Clone, Debug)]
pub struct ApiState {
    commands: mpsc::Sender<Command>,
}

impl ApiState {
    /// Handlers send their commands on `commands`.
    pub fn new(commands: mpsc::Sender<Command>) -> Self {
        ApiState { commands }
    }
}

/// An error reply.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorReply { error: self.1 })).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn stopping() -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping".into())
}

async fn ask<T>(state: &ApiState, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    state.commands.send(make(tx)).await.map_err(|_| stopping())?;
    rx.await.map_err(|_| stopping())
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/members", get(members))
        .route("/v1/publish", post(publish))
        .route("/v1/subscribe", get(subscribe))
        .route("/v1/topics", get(topics))
        .route("/v1/ring", get(ring))
        .route("/v1/values", post(set_value))
        .route("/v1/query", post(query))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError(StatusCode::NOT_FOUND, "no such endpoint; see the README's API table".into())
        })
        .with_state(state)
}

async fn status(State(s): State<ApiState>) -> Result<Json<Status>, ApiError> {
    Ok(Json(ask(&s, Command::Status).await?))
}

async fn members(State(s): State<ApiState>) -> Result<Json<Vec<Member>>, ApiError> {
    Ok(Json(ask(&s, Command::Members).await?))
}

async fn publish(State(s): State<ApiState>, body: Bytes) -> Result<Json<Published>, ApiError> {
    let req: PublishRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("bad publish request: {e}")))?;
    let published = ask(&s, |r| Command::Publish(req, r)).await?.map_err(bad)?;
    Ok(Json(published))
}

#[derive(Deserialize)]
struct SubscribeParams {
    topic: String,
    filter: Option<String>,
    expire: Option<f64>,
}

async fn subscribe(
    State(s): State<ApiState>,
    params: Result<Query<SubscribeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| {
        bad(format!("bad subscribe query: {e} (expected ?topic=NAME[&filter=EXPR][&expire=SECS])"))
    })?;
    let filter = match p.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        Some(f) => Some(Filter::parse(f).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    let expire = match p.expire {
        Some(secs) if secs.is_finite() && secs > 0.0 && secs <= 1e9 => Some(Duration::from_secs_f64(secs)),
        Some(secs) => return Err(bad(format!("expire must be a positive number of seconds, got {secs}"))),
        None => None,
    };
    let (sink, items) = mpsc::channel(8192);
    let accepted =
        ask(&s, |reply| Command::Subscribe { topic: p.topic, filter, expire, sink, reply }).await?;
    accepted.map_err(bad)?;
    let lines = ReceiverStream::new(items).map(|item| {
        let mut line = serde_json::to_vec(&item).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

async fn topics(State(s): State<ApiState>) -> Result<Json<Vec<TopicInfo>>, ApiError> {
    Ok(Json(ask(&s, Command::Topics).await?))
}

async fn ring(State(s): State<ApiState>) -> Result<Json<RingInfo>, ApiError> {
    Ok(Json(ask(&s, Command::Ring).await?))
}

async fn set_value(State(s): State<ApiState>, body: Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let req: SetValue = serde_json::from_slice(&body).map_err(|e| bad(format!("bad value request: {e}")))?;
    if !req.value.is_finite() {
        return Err(bad("value must be a finite number"));
    }
    ask(&s, |r| Command::SetValue(req, r)).await?.map_err(bad)?;
    Ok(Json(serde_json::json!({})))
}

async fn query(State(s): State<ApiState>, body: Bytes) -> Result<Json<QueryResult>, ApiError> {
    let req: QueryRequest =
        serde_json::from_slice(&body).map_err(|e| bad(format!("bad query request: {e}")))?;
    if !matches!(req.func.as_str(), "avg" | "sum" | "count" | "min" | "max") {
        return Err(bad(format!("unknown function `{}`: use avg, sum, count, min or max", req.func)));
    }
    let (tx, rx) = oneshot::channel();
    s.commands.send(Command::Query(req, tx)).await.map_err(|_| stopping())?;
    match tokio::time::timeout(QUERY_TIMEOUT, rx).await {
        Ok(Ok(result)) => Ok(Json(result.map_err(bad)?)),
        Ok(Err(_)) => Err(stopping()),
        Err(_) => Err(ApiError(StatusCode::GATEWAY_TIMEOUT, "the query did not converge in time".into())),
    }
}

async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let text = ask(&s, Command::Metrics).await?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response())
}
