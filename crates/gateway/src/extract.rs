//! Extractors that fail with [`ApiError`]s instead of axum's plain-text rejections.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request, rejection::JsonRejection},
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{MAX_BODY_BYTES, error::ApiError};

/// A JSON body. Wrong content type is `415`, unparsable JSON `400 malformed_json`, a missing or
/// mistyped field `400 invalid_argument`, more than 64 KiB `413`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => ApiError::unsupported_media_type(),
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::malformed_json(clean(&e.body_text()))
                }
                JsonRejection::JsonDataError(e) => {
                    ApiError::invalid_argument(clean(&e.body_text()))
                }
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::payload_too_large(MAX_BODY_BYTES)
                }
                other => ApiError::malformed_json(clean(&other.body_text())),
            }),
        }
    }
}

/// serde's messages are good; axum's prefix ("Failed to deserialize the JSON body into the target
/// type: ") is noise for a client.
fn clean(text: &str) -> String {
    let text = text.split_once(": ").map_or(text, |(_, rest)| rest);
    text.to_owned()
}

/// The client's address: the TCP peer, or, behind trusted proxies, the address the farthest of
/// them was called from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Set as a request extension: how many proxies in front of the gateway append to
/// `X-Forwarded-For` (`REALCHAT_GATEWAY_TRUSTED_PROXY_HOPS`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrustedProxies(pub(crate) u8);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(TrustedProxies(hops)) = parts.extensions.get::<TrustedProxies>().copied()
            && let Some(ip) = forwarded_client(&parts.headers, hops)
        {
            return Ok(Self(ip));
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| Self(addr.ip()))
            .ok_or_else(ApiError::internal)
    }
}

/// The client as `hops` trusted proxies report it: each appends the address it was called from to
/// `X-Forwarded-For` (over all the header's lines, in order), so the `hops`-th entry from the
/// right is what the farthest trusted proxy saw. Entries left of it are whatever the client sent,
/// a new one for every request if it likes: never used. `None` (use the TCP peer) with no trusted
/// proxies, or when the header holds fewer entries than there are proxies, or the entry is not
/// an address.
fn forwarded_client(headers: &axum::http::HeaderMap, hops: u8) -> Option<IpAddr> {
    if hops == 0 {
        return None;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    let entry = entries.get(entries.len().checked_sub(usize::from(hops))?)?;
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
}

/// The rate-limit bucket of a client address: the address itself for IPv4, its /64 for IPv6 (one
/// subscriber gets a whole /64, so single addresses would give one client millions of buckets).
pub(crate) fn bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                format!("{}/64", std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The authenticated caller, put in the request by the authentication middleware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: Uuid,
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthUser>()
            .copied()
            .ok_or_else(|| ApiError::unauthenticated("missing bearer token"))
    }
}

/// Path parameters; one that does not decode (percent-encoded bytes that are not UTF-8) is
/// `400 invalid_argument`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection| ApiError::invalid_argument(clean(&rejection.body_text())))
    }
}

/// Query parameters; anything unparsable is `400 invalid_argument`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| ApiError::invalid_argument(clean(&rejection.body_text())))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    #[test]
    fn the_client_is_the_entry_the_farthest_trusted_proxy_appended() {
        // The client sent "6.6.6.6" itself; the load balancer appended the address it saw.
        let one_proxy = headers(&["6.6.6.6, 203.0.113.7"]);
        assert_eq!(
            forwarded_client(&one_proxy, 1),
            Some("203.0.113.7".parse().unwrap())
        );
        // Two proxies (a CDN, then the load balancer), over two header lines.
        let two = headers(&["6.6.6.6, 198.51.100.2", "10.0.0.9"]);
        assert_eq!(
            forwarded_client(&two, 2),
            Some("198.51.100.2".parse().unwrap())
        );
        // Not trusted, or fewer entries than proxies, or not an address: the TCP peer decides.
        assert_eq!(forwarded_client(&one_proxy, 0), None);
        assert_eq!(forwarded_client(&headers(&["203.0.113.7"]), 2), None);
        assert_eq!(forwarded_client(&headers(&["6.6.6.6, nonsense"]), 1), None);
        assert_eq!(
            forwarded_client(&headers(&["[2001:db8::1]:4711"]), 1),
            Some("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket(a), "2001:db8:1:2::/64");
        assert_eq!(bucket(a), bucket(b));
        assert_ne!(bucket(a), bucket(other));
        assert_eq!(bucket("203.0.113.7".parse().unwrap()), "203.0.113.7");
        assert_eq!(bucket("::ffff:203.0.113.7".parse().unwrap()), "203.0.113.7");
    }
}
