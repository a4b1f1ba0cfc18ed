//! Where a request carries its access token: `Authorization: Bearer <token>`, or, for a browser's
//! WebSocket (which cannot set headers), the `access_token` query parameter.

use http::{HeaderMap, header};

/// What a request says about its access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// No `Authorization` header (and no `access_token` parameter where one is allowed).
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    Malformed,
    /// The token, not checked in any way yet.
    Present(&'a str),
}

/// The token of an `Authorization` header value: `Bearer <token>`, the scheme in any case
/// (RFC 9110 §11.1), surrounding spaces ignored.
pub fn from_authorization(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// The token in a request's `Authorization` header.
pub fn from_headers(headers: &HeaderMap) -> Token<'_> {
    match headers.get(header::AUTHORIZATION) {
        None => Token::Missing,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(from_authorization)
            .map_or(Token::Malformed, Token::Present),
    }
}

/// The token of a WebSocket request: the `Authorization` header when there is one (and only
/// it), else the `access_token` parameter of the raw query string.
pub fn from_headers_or_query<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Token<'a> {
    match from_headers(headers) {
        Token::Missing => query
            .into_iter()
            .flat_map(|query| query.split('&'))
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| *name == "access_token")
            .map(|(_, token)| token)
            .filter(|token| !token.is_empty())
            .map_or(Token::Missing, Token::Present),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization
            && let Ok(value) = value.parse()
        {
            headers.insert(header::AUTHORIZATION, value);
        }
        headers
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case_and_nothing_else_is() {
        for ok in [
            "Bearer abc.def",
            "bearer abc.def",
            "BEARER abc.def",
            "  Bearer   abc.def ",
        ] {
            assert_eq!(from_authorization(ok), Some("abc.def"), "{ok:?}");
        }
        for bad in [
            "Basic abc",
            "Bearer",
            "Bearer ",
            "abc.def",
            "Bearer a b",
            "Bearerabc",
        ] {
            assert_eq!(from_authorization(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_header_says_missing_malformed_or_the_token() {
        assert_eq!(from_headers(&headers(None)), Token::Missing);
        assert_eq!(from_headers(&headers(Some("Basic x"))), Token::Malformed);
        assert_eq!(
            from_headers(&headers(Some("Bearer t"))),
            Token::Present("t")
        );
    }

    #[test]
    fn a_socket_takes_the_header_first_and_the_query_parameter_only_without_one() {
        let query = Some("x=1&access_token=q.t&y=2");
        assert_eq!(
            from_headers_or_query(&headers(None), query),
            Token::Present("q.t")
        );
        assert_eq!(
            from_headers_or_query(&headers(Some("Bearer h.t")), query),
            Token::Present("h.t")
        );
        // A malformed header is not overruled by the query.
        assert_eq!(
            from_headers_or_query(&headers(Some("Basic x")), query),
            Token::Malformed
        );
        assert_eq!(
            from_headers_or_query(&headers(None), Some("access_token=")),
            Token::Missing
        );
        assert_eq!(from_headers_or_query(&headers(None), None), Token::Missing);
    }
}
