//! What a request must show before any handler sees it. The API answers whatever can open a
//! TCP connection to it, and on a desktop that includes every web page in a browser on the
//! same host: a page can POST a "simple" request (`text/plain`, no preflight) to publish, and
//! by DNS rebinding (a name of the page's that first resolves to its server, then to
//! 127.0.0.1) it can read the replies too. So, in this order:
//!
//! 1. **Token** (`--api-token-file`): when the agent has one, every request carries
//!    `Authorization: Bearer TOKEN` or is refused with 401. An API bound beyond loopback must
//!    have one (the agent refuses to start otherwise), since anyone on the network could use it.
//! 2. **Host**: without a token, the `Host` header must name the API by an IP address or
//!    `localhost` (with any port), else 421. A rebinding page's requests carry the page's own
//!    DNS name, so they stop here. With a token the name is free: a rebinding page cannot know
//!    the token.
//! 3. **Origin**: a request with an `Origin` other than this API's own (`http://` and the
//!    `Host` it was sent to) comes from a page of another site and is refused with 403. The CLI,
//!    curl and Prometheus send no `Origin`.
//! 4. **Content type**: a POST must say `Content-Type: application/json`, else 415: a browser
//!    sends that type cross-site only after a CORS preflight, which this API never grants.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The checks of the module docs, with the token (if any) they compare against.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    token: Option<Arc<[u8]>>,
}

impl Guard {
    /// A guard that requires `Authorization: Bearer token` when `token` is given.
    pub fn new(token: Option<&str>) -> Guard {
        Guard { token: token.map(|t| Arc::from(t.as_bytes())) }
    }

    /// Why `method` with `headers` is refused, if it is.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        match &self.token {
            Some(token) => {
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|h| h.to_str().ok())
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .map(str::trim);
                if !given.is_some_and(|g| same(g.as_bytes(), token)) {
                    return Err(ApiError::Unauthorized);
                }
            }
            None if !is_local_host(host) => return Err(ApiError::MisdirectedHost(host.to_string())),
            None => {}
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if host.is_empty() || origin != format!("http://{host}") {
                return Err(ApiError::ForeignOrigin(origin.to_string()));
            }
        }
        if method == Method::POST {
            let kind = headers.get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or("");
            let essence = kind.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Err(ApiError::NotJson(kind.to_string()));
            }
        }
        Ok(())
    }
}

/// Whether `host` (a `Host` header: a name or address, maybe with a port) names this API
/// without DNS: an IP address, or `localhost`.
fn is_local_host(host: &str) -> bool {
    if host.parse::<std::net::SocketAddr>().is_ok() || host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    // `[::1]` without a port does not parse as either.
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        _ => host,
    };
    name.eq_ignore_ascii_case("localhost")
}

/// `a == b` in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: refuse what [`Guard::check`] refuses, pass the rest on.
pub async fn guard(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    match guard.check(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, StatusCode};

    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn status(g: &Guard, m: Method, pairs: &[(header::HeaderName, &str)]) -> Option<StatusCode> {
        g.check(&m, &headers(pairs)).err().map(|e| e.status())
    }

    #[test]
    fn a_browser_forged_text_plain_post_is_refused_with_415() {
        let g = Guard::new(None);
        let host = (header::HOST, "127.0.0.1:7070");
        let plain = (header::CONTENT_TYPE, "text/plain");
        assert_eq!(
            status(&g, Method::POST, &[host.clone(), plain]),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            status(&g, Method::POST, std::slice::from_ref(&host)),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        let json = (header::CONTENT_TYPE, "Application/JSON; charset=utf-8");
        assert_eq!(status(&g, Method::POST, &[host.clone(), json]), None);
        assert_eq!(status(&g, Method::GET, &[host]), None, "a GET needs no content type");
    }

    #[test]
    fn a_foreign_origin_is_refused_with_403() {
        let g = Guard::new(None);
        let host = (header::HOST, "127.0.0.1:7070");
        let evil = (header::ORIGIN, "http://evil.example");
        assert_eq!(status(&g, Method::GET, &[host.clone(), evil]), Some(StatusCode::FORBIDDEN));
        let null = (header::ORIGIN, "null");
        assert_eq!(status(&g, Method::GET, &[host.clone(), null]), Some(StatusCode::FORBIDDEN));
        let own = (header::ORIGIN, "http://127.0.0.1:7070");
        assert_eq!(status(&g, Method::GET, &[host, own]), None);
    }

    #[test]
    fn a_rebound_dns_name_in_host_is_refused_with_421() {
        let g = Guard::new(None);
        for bad in ["evil.example:7070", "evil.example", "", "localhost.evil.example"] {
            assert_eq!(
                status(&g, Method::GET, &[(header::HOST, bad)]),
                Some(StatusCode::MISDIRECTED_REQUEST),
                "{bad}"
            );
        }
        for good in ["127.0.0.1:7070", "localhost:7070", "LOCALHOST", "[::1]:7070", "[::1]", "10.0.0.5:7070"]
        {
            assert_eq!(status(&g, Method::GET, &[(header::HOST, good)]), None, "{good}");
        }
    }

    #[test]
    fn with_a_token_every_request_must_carry_it() {
        let g = Guard::new(Some("s3cret-token"));
        let host = (header::HOST, "api.example:7070");
        assert_eq!(status(&g, Method::GET, std::slice::from_ref(&host)), Some(StatusCode::UNAUTHORIZED));
        let wrong = (header::AUTHORIZATION, "Bearer s3cret-tokem");
        assert_eq!(status(&g, Method::GET, &[host.clone(), wrong]), Some(StatusCode::UNAUTHORIZED));
        let right = (header::AUTHORIZATION, "Bearer s3cret-token");
        assert_eq!(status(&g, Method::GET, &[host.clone(), right.clone()]), None, "any Host with the token");
        let plain = (header::CONTENT_TYPE, "text/plain");
        assert_eq!(
            status(&g, Method::POST, &[host, right, plain]),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            "the token does not lift the content type rule"
        );
    }
}
