//! The axum routes of the local API. Each handler parses its request into checked types (a
//! [`TopicName`], a [`Func`](hearsay_protocols::aggregate::Func), a [`Filter`], an encoded
//! [`AppMessage`]), sends one [`Command`] to the actor, and renders the reply; every failure is
//! an [`ApiError`], whose status is decided in one place.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use super::types::*;
use crate::agent::{Command, DurableName, StartAt, SubscribeOptions};
use crate::filter::Filter;
use crate::message::{AppMessage, TopicName};
use crate::transport::faulty::Faults;

/// How long the API waits for a query to converge before answering 504.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Items a subscription's stream may hold before its subscriber counts as not keeping up.
pub const SUBSCRIPTION_QUEUE: usize = 8192;

/// Subscriptions an agent serves at once unless told otherwise (`--max-subscriptions`). Each
/// holds a queue of up to [`SUBSCRIPTION_QUEUE`] items and a copy of every delivery it takes.
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// Shared state of the handlers: the way to the actor.
#[derive(Clone, Debug)]
pub struct ApiState {
    commands: mpsc::Sender<Command>,
    /// The largest message body a publish may carry (the agent's `max_message_bytes`).
    max_message_bytes: usize,
    /// How long a query may take before the answer is 504, in milliseconds.
    query_timeout_ms: Arc<AtomicU64>,
    /// The agent's fault injection, when the test control is on (`hearsay agent --test-control`).
    test_control: Option<Arc<Faults>>,
    /// What every request must show first.
    guard: super::guard::Guard,
    /// One permit per open subscription.
    subscriptions: Arc<tokio::sync::Semaphore>,
    /// The permits there are.
    max_subscriptions: usize,
    /// The agent's keyring (`/v1/keys`); `None`: those routes answer 404.
    keys: Option<Arc<crate::agent::keys::LiveKeyring>>,
}

impl ApiState {
    /// Handlers send their commands on `commands`; publishes take bodies of up to
    /// [`MAX_BODY`](crate::message::MAX_BODY) bytes.
    pub fn new(commands: mpsc::Sender<Command>) -> Self {
        ApiState {
            commands,
            query_timeout_ms: Arc::new(AtomicU64::new(QUERY_TIMEOUT.as_millis() as u64)),
            test_control: None,
            max_message_bytes: crate::message::MAX_BODY,
            guard: super::guard::Guard::default(),
            subscriptions: Arc::new(tokio::sync::Semaphore::new(MAX_SUBSCRIPTIONS)),
            max_subscriptions: MAX_SUBSCRIPTIONS,
            keys: None,
        }
    }

    /// Serve the keyring's routes (`/v1/keys`) over this manager.
    pub fn with_keys(mut self, keys: Arc<crate::agent::keys::LiveKeyring>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Every request must carry `Authorization: Bearer token` (see [`super::guard`]).
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.guard = super::guard::Guard::new(token);
        self
    }

    /// Serve at most `max` subscriptions at once; one more is refused with 503.
    pub fn with_max_subscriptions(mut self, max: usize) -> Self {
        self.subscriptions = Arc::new(tokio::sync::Semaphore::new(max));
        self.max_subscriptions = max;
        self
    }

    /// Serve the test control, `GET`/`POST /v1/test/control`, over these faults: cut and heal
    /// links at run time, set loss, delay and the query timeout. For tests only: without it the
    /// path is a 404 like any unknown one.
    pub fn with_test_control(mut self, faults: Arc<Faults>) -> Self {
        self.test_control = Some(faults);
        self
    }

    /// Publishes take bodies of up to `max` bytes (the agent's `max_message_bytes`).
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// Send `make(reply)` to the actor and wait for the reply; a closed channel or a dropped
    /// reply means the agent is stopping.
    pub(super) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| ApiError::Stopping)?;
        rx.await.map_err(|_| ApiError::Stopping)
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    let routes = Router::new();
    let routes = match state.test_control {
        Some(_) => routes.route("/v1/test/control", get(test_control).post(set_test_control)),
        None => routes,
    };
    routes
        .route("/v1/status", get(status))
        .route("/v1/members", get(members))
        .route("/v1/publish", post(publish))
        .route("/v1/subscribe", get(subscribe))
        .route("/v1/ack", post(ack))
        .route("/v1/durable", get(durables))
        .route("/v1/durable/{name}", delete(delete_durable))
        .route("/v1/topics", get(topics))
        .route("/v1/ring", get(ring))
        .route("/v1/values", post(set_value))
        .route("/v1/query", post(query))
        .route("/v1/keys", get(keys_list))
        .route("/v1/keys/{op}", post(keys_op))
        .route("/metrics", get(metrics))
        .merge(super::events::routes())
        .fallback(|| async { ApiError::NotFound })
        .layer(axum::middleware::from_fn_with_state(state.guard.clone(), super::guard::guard))
        .with_state(state)
}

/// The JSON body of a request to `endpoint`.
fn parse<T: DeserializeOwned>(
    endpoint: &'static str,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    serde_json::from_slice(&body?).map_err(|source| ApiError::Json { endpoint, source })
}

async fn status(State(s): State<ApiState>) -> Result<Json<Status>, ApiError> {
    Ok(Json(s.ask(Command::Status).await?))
}

async fn members(State(s): State<ApiState>) -> Result<Json<Vec<Member>>, ApiError> {
    Ok(Json(s.ask(Command::Members).await?))
}

/// The message a publish request carries, encoded (which checks its bounds, the body's against
/// `max_body`).
fn message(req: PublishRequest, max_body: usize) -> Result<(TopicName, Bytes), ApiError> {
    let body = match (req.payload, req.payload_b64) {
        (Some(_), Some(_)) => return Err(ApiError::TwoPayloads),
        (Some(t), None) => Bytes::from(t.into_bytes()),
        (None, Some(b)) => Bytes::from(base64::engine::general_purpose::STANDARD.decode(b)?),
        (None, None) => Bytes::new(),
    };
    Ok((req.topic, AppMessage { headers: req.headers, body }.encode_within(max_body)?))
}

async fn publish(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Published>, ApiError> {
    let (topic, payload) = message(parse("publish", body)?, s.max_message_bytes)?;
    let name = topic.clone();
    let id = s.ask(|reply| Command::Publish { topic, payload, reply }).await??;
    let subscribers = s.ask(|reply| Command::KnownSubscribers { topic: name.clone(), reply }).await?;
    Ok(Json(Published::new(name.as_str(), &id, subscribers)))
}

#[derive(Deserialize)]
struct SubscribeParams {
    topic: TopicName,
    filter: Option<String>,
    expire: Option<f64>,
    durable: Option<DurableName>,
    from: Option<String>,
}

async fn subscribe(
    State(s): State<ApiState>,
    params: Result<Query<SubscribeParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let filter = match p.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        Some(f) => Some(Filter::parse(f)?),
        None => None,
    };
    let expire = match p.expire {
        Some(secs) if secs.is_finite() && secs > 0.0 && secs <= 1e9 => Some(Duration::from_secs_f64(secs)),
        Some(secs) => return Err(ApiError::Expire(secs)),
        None => None,
    };
    let from = match p.from.as_deref() {
        Some(f) => f.parse::<StartAt>()?,
        None => StartAt::New,
    };
    let options = SubscribeOptions { filter, expire, from, durable: p.durable };
    // Held by the stream: the slot frees when the response ends (the client hangs up, the
    // subscription expires, the agent stops).
    let permit = s
        .subscriptions
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManySubscriptions(s.max_subscriptions))?;
    // One slot more than the messages it holds: the agent keeps it for the closing line.
    let (sink, items) = mpsc::channel(SUBSCRIPTION_QUEUE + 1);
    s.ask(|reply| Command::Subscribe { topic: p.topic, options, sink, reply }).await??;
    let lines = ReceiverStream::new(items).map(move |item| {
        let _slot = &permit;
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

async fn ack(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let AckRequest { durable, acks } = parse("ack", body)?;
    let durable = DurableName::new(durable)?;
    let acks = acks
        .into_iter()
        .map(|a| parse_hex(&a.origin).map(|o| (o, a.seq)).ok_or(ApiError::Origin(a.origin)))
        .collect::<Result<Vec<_>, _>>()?;
    s.ask(|reply| Command::Ack { durable, acks, reply }).await??;
    Ok(Json(serde_json::json!({})))
}

async fn durables(State(s): State<ApiState>) -> Result<Json<Vec<DurableInfo>>, ApiError> {
    Ok(Json(s.ask(Command::Durables).await?))
}

async fn delete_durable(
    State(s): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(name) = name.map_err(|_| ApiError::NotFound)?;
    let name = DurableName::new(name)?;
    s.ask(|reply| Command::DeleteDurable { name, reply }).await??;
    Ok(Json(serde_json::json!({})))
}

async fn topics(State(s): State<ApiState>) -> Result<Json<Vec<TopicInfo>>, ApiError> {
    Ok(Json(s.ask(Command::Topics).await?))
}

async fn ring(State(s): State<ApiState>) -> Result<Json<RingInfo>, ApiError> {
    Ok(Json(s.ask(Command::Ring).await?))
}

async fn set_value(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let SetValue { name, value } = parse("value", body)?;
    s.ask(|reply| Command::SetValue { name, value, reply }).await??;
    Ok(Json(serde_json::json!({})))
}

async fn query(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<QueryResult>, ApiError> {
    let QueryRequest { func, name, tags } = parse("query", body)?;
    let scope = hearsay_protocols::tags::TagScope::parse(&tags).map_err(ApiError::Scope)?;
    let asked = s.ask(|reply| Command::Query { func, name, scope, reply });
    let timeout = Duration::from_millis(s.query_timeout_ms.load(Ordering::Relaxed));
    match tokio::time::timeout(timeout, asked).await {
        Ok(answer) => Ok(Json(answer??)),
        Err(_) => Err(ApiError::NotConverged),
    }
}

async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let text = s.ask(Command::Metrics).await?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response())
}

/// `GET /v1/keys`: the keys every alive member holds.
async fn keys_list(State(s): State<ApiState>) -> Result<Json<crate::agent::keys::KeyList>, ApiError> {
    let keys = s.keys.clone().ok_or(ApiError::NotFound)?;
    let members = s.ask(Command::Members).await?;
    Ok(Json(keys.list(&members).await))
}

/// `POST /v1/keys/install` (`{"secret": HEX}`), `/v1/keys/use` and `/v1/keys/remove`
/// (`{"fingerprint": HEX}`, or the secret): applied here, then on every alive member.
async fn keys_op(
    State(s): State<ApiState>,
    op: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<crate::agent::keys::KeyOpReport>, ApiError> {
    use crate::agent::keys::KeyOp;
    use crate::transport::identity::ClusterSecret;
    let keys = s.keys.clone().ok_or(ApiError::NotFound)?;
    let Path(op) = op.map_err(|_| ApiError::NotFound)?;
    let req: KeyOpRequest = parse("keys", body)?;
    let secret = match &req.secret {
        Some(hex) => Some(
            ClusterSecret::parse(hex)
                .ok_or(ApiError::Key("`secret` must be 64 hex digits, as `hearsay keygen` writes".into()))?,
        ),
        None => None,
    };
    let fingerprint = match (&req.fingerprint, &secret) {
        (Some(f), _) => Some(f.parse().map_err(ApiError::Key)?),
        (None, Some(s)) => Some(s.fingerprint()),
        (None, None) => None,
    };
    let op = match (op.as_str(), secret, fingerprint) {
        ("install", Some(secret), _) => KeyOp::Install(secret),
        ("install", None, _) => return Err(ApiError::Key("install needs `secret`".into())),
        ("use", _, Some(fp)) => KeyOp::Use(fp),
        ("remove", _, Some(fp)) => KeyOp::Remove(fp),
        ("use" | "remove", _, None) => {
            return Err(ApiError::Key(format!("{op} needs `fingerprint` (or `secret`)")));
        }
        _ => return Err(ApiError::NotFound),
    };
    let members = s.ask(Command::Members).await?;
    Ok(Json(keys.cluster(op, &members).await?))
}

/// The test control's current settings.
fn control_state(s: &ApiState, faults: &Faults) -> TestControl {
    TestControl {
        blocked: Some(faults.blocked()),
        loss: Some(faults.loss()),
        delay_ms: Some(faults.delay().as_millis() as u64),
        query_timeout_ms: Some(s.query_timeout_ms.load(Ordering::Relaxed)),
    }
}

async fn test_control(State(s): State<ApiState>) -> Result<Json<TestControl>, ApiError> {
    let faults = s.test_control.clone().ok_or(ApiError::NotFound)?;
    Ok(Json(control_state(&s, &faults)))
}

/// Apply the settings given (the others stay), then reply with all of them: they are in
/// effect for every datagram sent after the reply.
async fn set_test_control(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TestControl>, ApiError> {
    let faults = s.test_control.clone().ok_or(ApiError::NotFound)?;
    let c: TestControl = parse("test control", body)?;
    if let Some(loss) = c.loss {
        if !(loss.is_finite() && (0.0..=1.0).contains(&loss)) {
            return Err(ApiError::TestControl(format!("loss must be in [0, 1], got {loss}")));
        }
    }
    if c.query_timeout_ms == Some(0) {
        return Err(ApiError::TestControl("query_timeout_ms must be at least 1".into()));
    }
    if let Some(blocked) = c.blocked {
        faults.set_blocked(blocked);
    }
    if let Some(loss) = c.loss {
        faults.set_loss(loss);
    }
    if let Some(ms) = c.delay_ms {
        faults.set_delay(Duration::from_millis(ms));
    }
    if let Some(ms) = c.query_timeout_ms {
        s.query_timeout_ms.store(ms, Ordering::Relaxed);
    }
    Ok(Json(control_state(&s, &faults)))
}
