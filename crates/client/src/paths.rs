//! Values inside URLs: ids as path segments, query values.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::Error;

/// What a URL may carry as it is: RFC 3986's unreserved characters. Everything else in a path
/// segment or a query value is percent-encoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query value.
pub(crate) fn encode(value: &str) -> String {
    utf8_percent_encode(value, UNRESERVED).to_string()
}

/// `value` as one path segment: percent-encoded, so an id with `/` or `?` in it cannot reach
/// another endpoint. An empty one is refused here (the server would read a different path).
pub(crate) fn segment(what: &str, value: &str) -> Result<String, Error> {
    if value.is_empty() {
        return Err(Error::Invalid(format!("an empty {what}")));
    }
    Ok(encode(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_pass_as_they_are() {
        assert_eq!(encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(encode("a/b?c=d&e f"), "a%2Fb%3Fc%3Dd%26e%20f");
        assert_eq!(encode("é"), "%C3%A9");
        assert!(segment("user id", "").is_err());
        assert_eq!(segment("user id", "../x").ok().as_deref(), Some("..%2Fx"));
    }
}
