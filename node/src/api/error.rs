//! Every way an API request can fail, and the one place that maps each to an HTTP status.
//!
//! | status | when |
//! |---|---|
//! | 401 | the agent has an API token (`--api-token-file`) and the request did not carry it as `Authorization: Bearer` |
//! | 403 | an `Origin` header of another site (a web page's request) |
//! | 415 | a POST without `Content-Type: application/json` |
//! | 421 | no token, and a `Host` that is neither an IP address nor `localhost` (DNS rebinding) |
//! | 400 | bad input: a body or query string that does not parse, a bad topic, header or filter, a value that is not finite, an attribute name out of bounds, a key operation without a valid secret or fingerprint |
//! | 404 | no such endpoint |
//! | 404 | no such durable subscription (an ack or a delete naming one that does not exist) |
//! | 409 | a key operation the keyring refuses: removing the primary key, using a key not installed, installing into a full keyring |
//! | 409 | the node's state refuses it: too many topics subscribed, too many queries running, a durable subscription that has a client already or follows another topic, durable subscriptions on an agent without a store |
//! | 413 | too large: a request body over the server's limit, a message body over the agent's `max_message_bytes` (default [`MAX_BODY`](crate::message::MAX_BODY); the error says the limit) or the Engine's payload limit |
//! | 503 | as many subscriptions open as the agent allows (the error says the limit); the agent is stopping (leaving the cluster, or gone), or its store failed (an I/O error), or its keyring could not be written |
//! | 507 | the store's disk is full: a publish that cannot be kept is refused |
//! | 504 | a query did not converge within [`QUERY_TIMEOUT`](super::server::QUERY_TIMEOUT) |
//!
//! The body is always `{"error": "..."}` ([`ErrorReply`]).

use axum::Json;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hearsay_protocols::aggregate::QueryError;
use hearsay_protocols::pbcast::PublishError;

use super::types::ErrorReply;
use crate::agent::{DurableError, DurableNameError, StartAtError, SubscribeError};
use crate::engine::CommandError;
use crate::engine::multicast::MulticastError;
use crate::filter::FilterError;
use crate::message::MessageError;
use crate::store::StoreError;
use crate::transport::keyring::KeyringError;

impl From<SubscribeError> for ApiError {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::Engine(e) => ApiError::Command(e),
            SubscribeError::Durable(e) => ApiError::Durable(e),
        }
    }
}

impl From<DurableError> for ApiError {
    fn from(e: DurableError) -> Self {
        ApiError::Durable(e)
    }
}

impl From<crate::agent::PublishError> for ApiError {
    fn from(e: crate::agent::PublishError) -> Self {
        match e {
            crate::agent::PublishError::Engine(e) => ApiError::Command(e),
            crate::agent::PublishError::Store(e) => ApiError::Store(e),
        }
    }
}

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request body could not be read (over the size limit, or cut off).
    #[error("cannot read the request body: {0}{hint}", hint = limit_hint(.0))]
    Body(#[from] BytesRejection),
    /// The body is not the JSON this endpoint takes.
    #[error("bad {endpoint} request: {source}")]
    Json {
        /// What the body was for: publish, value or query.
        endpoint: &'static str,
        /// What serde says (it names the field, and lists the choices of an enum such as `fn`).
        source: serde_json::Error,
    },
    /// The query string of `/v1/subscribe` does not parse.
    #[error(
        "bad subscribe query: {0} (expected ?topic=NAME[&filter=EXPR][&expire=SECS][&durable=NAME][&from=new|all|TIME])"
    )]
    SubscribeQuery(#[from] QueryRejection),
    /// A `from` that is not new, all or an RFC 3339 time.
    #[error(transparent)]
    StartAt(#[from] StartAtError),
    /// A durable subscription name that breaks the naming rule.
    #[error(transparent)]
    DurableName(#[from] DurableNameError),
    /// An acknowledgement's origin that is not 64 hex digits.
    #[error("origin `{0}` is not a node id (64 hex digits, as subscription lines show it)")]
    Origin(String),
    /// A durable subscription operation the agent refused.
    #[error(transparent)]
    Durable(DurableError),
    /// A subscription filter that does not parse.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// An expiry that is not a positive number of seconds.
    #[error("expire must be a positive number of seconds, got {0}")]
    Expire(f64),
    /// A publish with both `payload` and `payload_b64`.
    #[error("give either payload or payload_b64, not both")]
    TwoPayloads,
    /// `payload_b64` is not base64.
    #[error("payload_b64 is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// A message or topic name that breaks a bound.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The Engine refused the command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The store cannot keep what was asked (507 when the disk is full, 503 otherwise).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A query's or listing's tag scope that cannot be used (bounds, regex).
    #[error("tags: {0}")]
    Scope(#[from] hearsay_protocols::tags::ScopeError),
    /// No route has this path.
    #[error("no such endpoint; see the README's API table")]
    NotFound,
    /// The agent is leaving or gone: it takes no more commands.
    #[error("the node is stopping")]
    Stopping,
    /// A query did not converge in time.
    #[error("the query did not converge in time")]
    NotConverged,
    /// A test control setting that cannot be applied (`hearsay agent --test-control`).
    #[error("test control: {0}")]
    TestControl(String),
    /// The agent has an API token and the request did not carry it.
    #[error("this API needs its token: send `Authorization: Bearer TOKEN` (the CLI: --api-token-file)")]
    Unauthorized,
    /// A `Host` that names the API by a DNS name other than `localhost`, with no token.
    #[error(
        "Host `{0}` is not this API's: use an IP address or localhost (or give the agent --api-token-file)"
    )]
    MisdirectedHost(String),
    /// An `Origin` of another site: a web page's request.
    #[error("requests from web pages of another origin ({0}) are refused")]
    ForeignOrigin(String),
    /// A POST whose body is not declared JSON.
    #[error("a POST must have Content-Type: application/json (got `{0}`)")]
    NotJson(String),
    /// A key operation's input that is not a secret or a fingerprint.
    #[error("keys: {0}")]
    Key(String),
    /// The keyring refused the operation (409), or could not be written (503).
    #[error(transparent)]
    Keyring(#[from] crate::transport::keyring::KeyringError),
    /// As many subscriptions are open as the agent allows.
    #[error("too many subscriptions: this agent serves at most {0} at once")]
    TooManySubscriptions(usize),
}

/// Any request body may be this large (axum's default limit, which the API keeps).
pub const MAX_REQUEST_BYTES: usize = 2 << 20;

/// What to add to a body rejection: the limit, when that is what was broken.
fn limit_hint(e: &BytesRejection) -> String {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        format!(" (a request body may be at most {MAX_REQUEST_BYTES} bytes)")
    } else {
        String::new()
    }
}

impl ApiError {
    /// The HTTP status of this error (the table in the module docs).
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Body(e) => e.status(),
            ApiError::Json { .. }
            | ApiError::SubscribeQuery(_)
            | ApiError::Filter(_)
            | ApiError::Expire(_)
            | ApiError::TwoPayloads
            | ApiError::Base64(_)
            | ApiError::StartAt(_)
            | ApiError::DurableName(_)
            | ApiError::Origin(_)
            | ApiError::TestControl(_)
            | ApiError::Key(_)
            | ApiError::Scope(_) => StatusCode::BAD_REQUEST,
            ApiError::Keyring(
                KeyringError::Full | KeyringError::NotInstalled(_) | KeyringError::RemovePrimary(_),
            ) => StatusCode::CONFLICT,
            ApiError::Keyring(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Durable(DurableError::Unknown(_)) => StatusCode::NOT_FOUND,
            ApiError::Durable(DurableError::Store(e)) if e.is_full() => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Durable(DurableError::Store(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Durable(_) => StatusCode::CONFLICT,
            ApiError::Message(MessageError::BodyTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Message(_) => StatusCode::BAD_REQUEST,
            ApiError::Command(e) => command_status(e),
            ApiError::Store(e) if e.is_full() => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotConverged => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MisdirectedHost(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::ForeignOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::NotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManySubscriptions(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The status of a command the Engine refused.
fn command_status(e: &CommandError) -> StatusCode {
    match e {
        CommandError::Publish(MulticastError::Publish(PublishError::TooLarge { .. })) => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        CommandError::TooManyTopics(_) | CommandError::Query(QueryError::TooManyQueries) => {
            StatusCode::CONFLICT
        }
        CommandError::Leaving => StatusCode::SERVICE_UNAVAILABLE,
        // Anything else about a publish, a value or a query is about what was asked.
        CommandError::Publish(_)
        | CommandError::Value(_)
        | CommandError::Query(_)
        | CommandError::Tags(_) => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(ErrorReply { error: self.to_string() })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use axum::extract::{FromRequest, Query};
    use axum::http::{Request, Uri};
    use hearsay_protocols::aggregate::{Func, ValueError};

    use super::*;
    use crate::agent::DurableName;
    use crate::api::types::QueryRequest;
    use crate::filter::Filter;
    use crate::transport::keyring::Fingerprint;

    fn name() -> DurableName {
        DurableName::new("d").unwrap()
    }

    fn json_error(body: &str) -> ApiError {
        let source = serde_json::from_str::<QueryRequest>(body).unwrap_err();
        ApiError::Json { endpoint: "query", source }
    }

    async fn oversized_body() -> BytesRejection {
        let big = vec![b'x'; 3 << 20]; // over axum's default limit of 2 MiB
        let req = Request::builder().uri("/v1/publish").body(axum::body::Body::from(big)).unwrap();
        Bytes::from_request(req, &()).await.unwrap_err()
    }

    #[tokio::test]
    async fn every_error_has_its_status() {
        let uri: Uri = "/v1/subscribe?expire=soon".parse().unwrap();
        let query = Query::<std::collections::HashMap<String, u32>>::try_from_uri(&uri).unwrap_err();
        let too_large = PublishError::TooLarge { len: 70_000, max: 65_536 };
        let cases: Vec<(ApiError, StatusCode)> = vec![
            (ApiError::Body(oversized_body().await), StatusCode::PAYLOAD_TOO_LARGE),
            (json_error("{"), StatusCode::BAD_REQUEST),
            (ApiError::SubscribeQuery(query), StatusCode::BAD_REQUEST),
            (Filter::parse("a ==").unwrap_err().into(), StatusCode::BAD_REQUEST),
            (ApiError::Expire(-1.0), StatusCode::BAD_REQUEST),
            (ApiError::TwoPayloads, StatusCode::BAD_REQUEST),
            (ApiError::Base64(base64::DecodeError::InvalidLength(3)), StatusCode::BAD_REQUEST),
            (MessageError::BadTopic.into(), StatusCode::BAD_REQUEST),
            (MessageError::TooManyHeaders.into(), StatusCode::BAD_REQUEST),
            (MessageError::BodyTooLarge { len: 300_000, max: 262_144 }.into(), StatusCode::PAYLOAD_TOO_LARGE),
            (CommandError::from(MulticastError::from(too_large)).into(), StatusCode::PAYLOAD_TOO_LARGE),
            (CommandError::Value(ValueError::NotFinite(f64::NAN)).into(), StatusCode::BAD_REQUEST),
            (CommandError::Value(ValueError::BadAttr).into(), StatusCode::BAD_REQUEST),
            (CommandError::Query(QueryError::EmptyAttr).into(), StatusCode::BAD_REQUEST),
            (CommandError::Query(QueryError::TooManyQueries).into(), StatusCode::CONFLICT),
            (CommandError::TooManyTopics(64).into(), StatusCode::CONFLICT),
            (CommandError::Leaving.into(), StatusCode::SERVICE_UNAVAILABLE),
            (ApiError::NotFound, StatusCode::NOT_FOUND),
            ("soon".parse::<crate::agent::StartAt>().unwrap_err().into(), StatusCode::BAD_REQUEST),
            (DurableName::new("a b").unwrap_err().into(), StatusCode::BAD_REQUEST),
            (ApiError::Origin("xyz".into()), StatusCode::BAD_REQUEST),
            (DurableError::Unknown(name()).into(), StatusCode::NOT_FOUND),
            (DurableError::InUse(name()).into(), StatusCode::CONFLICT),
            (DurableError::NoStore.into(), StatusCode::CONFLICT),
            (
                DurableError::OtherTopic {
                    name: name(),
                    topic: "a".parse().unwrap(),
                    asked: "b".parse().unwrap(),
                }
                .into(),
                StatusCode::CONFLICT,
            ),
            (
                SubscribeError::Durable(DurableError::Store(StoreError::Closed)).into(),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (ApiError::Stopping, StatusCode::SERVICE_UNAVAILABLE),
            (ApiError::NotConverged, StatusCode::GATEWAY_TIMEOUT),
            (ApiError::TestControl("loss".into()), StatusCode::BAD_REQUEST),
            (ApiError::Unauthorized, StatusCode::UNAUTHORIZED),
            (ApiError::MisdirectedHost("evil.example".into()), StatusCode::MISDIRECTED_REQUEST),
            (ApiError::ForeignOrigin("http://evil.example".into()), StatusCode::FORBIDDEN),
            (ApiError::NotJson("text/plain".into()), StatusCode::UNSUPPORTED_MEDIA_TYPE),
            (ApiError::TooManySubscriptions(1024), StatusCode::SERVICE_UNAVAILABLE),
            (ApiError::Key("secret".into()), StatusCode::BAD_REQUEST),
            (KeyringError::Full.into(), StatusCode::CONFLICT),
            (KeyringError::NotInstalled(Fingerprint([1; 8])).into(), StatusCode::CONFLICT),
            (KeyringError::RemovePrimary(Fingerprint([1; 8])).into(), StatusCode::CONFLICT),
            (
                KeyringError::Io { path: "/k".into(), source: std::io::ErrorKind::Other.into() }.into(),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(e.status(), status, "{e}");
            let message = e.to_string();
            let response = e.into_response();
            assert_eq!(response.status(), status, "{message}");
            let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
            let reply: ErrorReply = serde_json::from_slice(&body).unwrap();
            assert_eq!(reply.error, message, "the body is {{\"error\": the message}}");
        }
    }

    #[test]
    fn an_unknown_function_is_refused_with_the_valid_ones() {
        let e = json_error(r#"{"fn": "median", "name": "load"}"#).to_string();
        assert!(e.starts_with("bad query request: unknown variant `median`"), "{e}");
        for f in ["avg", "sum", "count", "min", "max"] {
            assert!(e.contains(&format!("`{f}`")), "{e} lists {f}");
        }
        let ok: QueryRequest = serde_json::from_str(r#"{"fn": "count", "name": "load"}"#).unwrap();
        assert_eq!(ok.func, Func::Count);
    }

    #[test]
    fn a_bad_topic_is_refused_while_parsing_the_request() {
        use crate::api::types::PublishRequest;
        let e = serde_json::from_str::<PublishRequest>(r#"{"topic": "", "payload": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("topic name must be 1 to 256 bytes"), "{e}");
        let long = format!(r#"{{"topic": "{}"}}"#, "t".repeat(257));
        assert!(serde_json::from_str::<PublishRequest>(&long).is_err());
        let ok: PublishRequest = serde_json::from_str(r#"{"topic": "news"}"#).unwrap();
        assert_eq!(ok.topic.as_str(), "news");
    }
}
