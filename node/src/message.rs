//! What an application publishes: headers and a body, carried as the payload of a topic
//! stream entry (the protocol machines never look inside).
//!
//! Encoding: postcard of [`AppMessage`]. Bounds are checked at publish time (the publisher
//! gets a clear error) and again on decode (a peer's oversized or malformed payload is
//! counted and dropped, never delivered).
//!
//! The body's bound is a setting (`max_message_bytes`, `--max-message-bytes`; default
//! [`MAX_BODY`]) checked by the publishing node with [`AppMessage::encode_within`]. Nodes of one
//! cluster may set it differently, so a receiver checks a peer's message against the largest
//! any setting allows, [`MAX_BODY_LIMIT`]: what fits the Engine's payload limit with every
//! header at its largest.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Headers per message at most.
pub const MAX_HEADERS: usize = 32;
/// Bytes per header name at most.
pub const MAX_HEADER_NAME: usize = 64;
/// Bytes per header value at most.
pub const MAX_HEADER_VALUE: usize = 256;
/// Bytes of body at most by default (the `max_message_bytes` setting, `--max-message-bytes`).
pub const MAX_BODY: usize = 256 * 1024;
/// What an encoded message may add to its body at most: 32 headers of a 64-byte name and a
/// 256-byte value with their length prefixes (10,337 bytes) and the body's own prefix, rounded
/// up to 16 KiB.
pub const MAX_ENCODING_OVERHEAD: usize = 16 * 1024;
/// The largest body any `max_message_bytes` setting may allow: an encoded message must fit the
/// Engine's payload limit (pbcast's and Scribe's `max_payload`, 1 MiB), so that every frame
/// that carries it stays under the frame limit (2 MiB; a retransmission batch holds at most
/// 256 KiB plus one message).
pub const MAX_BODY_LIMIT: usize = (1 << 20) - MAX_ENCODING_OVERHEAD;
/// Bytes of topic name at most.
pub const MAX_TOPIC: usize = 256;

/// An application message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppMessage {
    /// Header name → value, for subscription filters.
    pub headers: BTreeMap<String, String>,
    /// The payload.
    pub body: Bytes,
}

/// A message or topic that breaks a bound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Too many headers.
    #[error("at most {MAX_HEADERS} headers per message")]
    TooManyHeaders,
    /// A header name is empty, too long, or not a filter name (`[A-Za-z_][A-Za-z0-9_.-]*`).
    #[error("header name `{0}` must match [A-Za-z_][A-Za-z0-9_.-]* and be at most {MAX_HEADER_NAME} bytes")]
    BadHeaderName(String),
    /// A header value is too long.
    #[error("header `{0}`: value longer than {MAX_HEADER_VALUE} bytes")]
    HeaderValueTooLong(String),
    /// The body is longer than the maximum message size.
    #[error(
        "message body of {len} bytes exceeds the maximum message size of {max} bytes \
         (the agent's max_message_bytes, --max-message-bytes)"
    )]
    BodyTooLarge {
        /// The body's length.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// The topic name is empty, too long, or has control characters.
    #[error("topic name must be 1 to {MAX_TOPIC} bytes of printable UTF-8")]
    BadTopic,
    /// The bytes are not an encoded message.
    #[error("malformed message payload")]
    Malformed,
}

impl AppMessage {
    /// A message of `body`, without headers.
    pub fn new(body: impl Into<Bytes>) -> AppMessage {
        AppMessage { headers: BTreeMap::new(), body: body.into() }
    }

    /// Check every bound, the body's against the default [`MAX_BODY`].
    pub fn validate(&self) -> Result<(), MessageError> {
        self.validate_within(MAX_BODY)
    }

    /// Check every bound, the body's against `max_body` (a node's `max_message_bytes`).
    pub fn validate_within(&self, max_body: usize) -> Result<(), MessageError> {
        if self.headers.len() > MAX_HEADERS {
            return Err(MessageError::TooManyHeaders);
        }
        for (k, v) in &self.headers {
            let ok = k.len() <= MAX_HEADER_NAME && {
                let mut c = k.chars();
                c.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && c.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            };
            if !ok {
                return Err(MessageError::BadHeaderName(k.clone()));
            }
            if v.len() > MAX_HEADER_VALUE {
                return Err(MessageError::HeaderValueTooLong(k.clone()));
            }
        }
        if self.body.len() > max_body {
            return Err(MessageError::BodyTooLarge { len: self.body.len(), max: max_body });
        }
        Ok(())
    }

    /// Encode (after validating against the default [`MAX_BODY`]).
    pub fn encode(&self) -> Result<Bytes, MessageError> {
        self.encode_within(MAX_BODY)
    }

    /// Encode after validating, the body against `max_body` (a node's `max_message_bytes`).
    pub fn encode_within(&self, max_body: usize) -> Result<Bytes, MessageError> {
        self.validate_within(max_body)?;
        postcard::to_allocvec(self).map(Bytes::from).map_err(|_| MessageError::Malformed)
    }

    /// Decode and validate a payload from the network. The body is checked against
    /// [`MAX_BODY_LIMIT`], not this node's setting: the publisher's may be larger.
    pub fn decode(bytes: &[u8]) -> Result<AppMessage, MessageError> {
        let m: AppMessage = postcard::from_bytes(bytes).map_err(|_| MessageError::Malformed)?;
        m.validate_within(MAX_BODY_LIMIT)?;
        Ok(m)
    }
}

/// Check a topic name: 1 to [`MAX_TOPIC`] bytes, no control characters.
pub fn validate_topic(topic: &str) -> Result<(), MessageError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC || topic.chars().any(char::is_control) {
        return Err(MessageError::BadTopic);
    }
    Ok(())
}

/// A topic name that passed [`validate_topic`]: 1 to [`MAX_TOPIC`] bytes of printable UTF-8.
/// The API and the CLI parse names into it at the edge (serde and
/// [`FromStr`](std::str::FromStr) both check), so the agent never sees a bad one; the Engine
/// takes its [`as_str`](TopicName::as_str).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

impl TopicName {
    /// Check `name`.
    pub fn new(name: impl Into<String>) -> Result<TopicName, MessageError> {
        let name = name.into();
        validate_topic(&name)?;
        Ok(TopicName(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TopicName {
    type Error = MessageError;

    fn try_from(name: String) -> Result<Self, MessageError> {
        TopicName::new(name)
    }
}

impl std::str::FromStr for TopicName {
    type Err = MessageError;

    fn from_str(name: &str) -> Result<Self, MessageError> {
        TopicName::new(name)
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> String {
        name.0
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let mut m = AppMessage { headers: BTreeMap::new(), body: Bytes::from_static(b"hi") };
        m.headers.insert("priority".into(), "3".into());
        assert_eq!(AppMessage::decode(&m.encode().unwrap()).unwrap(), m);
        m.headers.insert("9bad".into(), "x".into());
        assert!(matches!(m.encode(), Err(MessageError::BadHeaderName(_))));
        let big = AppMessage { body: Bytes::from(vec![0; MAX_BODY + 1]), ..AppMessage::default() };
        assert_eq!(big.validate(), Err(MessageError::BodyTooLarge { len: MAX_BODY + 1, max: MAX_BODY }));
        assert_eq!(AppMessage::decode(&big.encode_within(MAX_BODY + 1).unwrap()).unwrap(), big);
        assert_eq!(AppMessage::decode(&[0xff, 0xff, 0xff]), Err(MessageError::Malformed));
        assert!(validate_topic("news").is_ok());
        assert!(validate_topic("").is_err() && validate_topic("a\nb").is_err());
        assert!(validate_topic(&"x".repeat(MAX_TOPIC + 1)).is_err());
    }

    #[test]
    fn the_largest_allowed_message_with_every_header_at_its_largest_fits_the_payload_limit() {
        let headers = (0..MAX_HEADERS)
            .map(|i| (format!("h{i:0>63}"), "v".repeat(MAX_HEADER_VALUE)))
            .collect::<BTreeMap<_, _>>();
        let m = AppMessage { headers, body: Bytes::from(vec![0xab; MAX_BODY_LIMIT]) };
        let encoded = m.encode_within(MAX_BODY_LIMIT).unwrap();
        let payload_limit = hearsay_protocols::pbcast::PbConfig::default().max_payload;
        assert_eq!(payload_limit, hearsay_overlay::scribe::ScribeConfig::default().max_payload);
        assert!(encoded.len() <= payload_limit, "{} > {payload_limit}", encoded.len());
        assert!(encoded.len() - m.body.len() <= MAX_ENCODING_OVERHEAD);
        assert!(2 * payload_limit <= hearsay_protocols::wire::DEFAULT_FRAME_LIMIT);
        let e = m.encode_within(MAX_BODY).unwrap_err().to_string();
        assert!(e.contains(&format!("maximum message size of {MAX_BODY} bytes")), "{e}");
        let over = AppMessage { body: Bytes::from(vec![0; MAX_BODY_LIMIT + 1]), ..m };
        let raw = postcard::to_allocvec(&over).unwrap();
        assert!(matches!(AppMessage::decode(&raw), Err(MessageError::BodyTooLarge { .. })));
    }

    #[test]
    fn a_topic_name_is_checked_however_it_is_made() {
        let ok: TopicName = "news/eu".parse().unwrap();
        assert_eq!(ok.as_str(), "news/eu");
        assert_eq!(ok.to_string(), "news/eu");
        assert!(TopicName::new("é".repeat(MAX_TOPIC / 2)).is_ok(), "the bound is in bytes");
        for bad in [String::new(), "a\nb".into(), "tab\there".into(), "x".repeat(MAX_TOPIC + 1)] {
            assert_eq!(bad.parse::<TopicName>(), Err(MessageError::BadTopic), "{bad:?}");
            assert_eq!(TopicName::try_from(bad.clone()), Err(MessageError::BadTopic), "{bad:?}");
        }
        // Through serde (the API's JSON), with the bound in the error.
        let parsed: TopicName = postcard::from_bytes(&postcard::to_allocvec("ok").unwrap()).unwrap();
        assert_eq!(parsed.as_str(), "ok");
        let e = postcard::from_bytes::<TopicName>(&postcard::to_allocvec("").unwrap()).unwrap_err();
        assert!(matches!(e, postcard::Error::SerdeDeCustom), "{e:?}");
        assert_eq!(String::from(ok.clone()), "news/eu");
        assert_eq!(postcard::to_allocvec(&ok).unwrap(), postcard::to_allocvec("news/eu").unwrap());
    }
}
