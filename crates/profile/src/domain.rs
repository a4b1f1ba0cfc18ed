//! Profile values that parse on construction. No I/O here.

/// Longest display name, in Unicode scalar values.
pub const MAX_DISPLAY_NAME: usize = 64;
/// Longest bio, in Unicode scalar values.
pub const MAX_BIO: usize = 500;
/// Longest avatar URL, in bytes.
pub const MAX_AVATAR_URL: usize = 2048;
/// Most profiles one search returns.
pub const MAX_SEARCH_LIMIT: u32 = 100;
/// Profiles a search returns when no limit is given.
pub const DEFAULT_SEARCH_LIMIT: u32 = 20;
/// Longest search prefix: a username is at most 32 characters.
pub const MAX_PREFIX: usize = 32;

/// Why a value in a request is not acceptable; the messages are the API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("display_name must be 1 to {} characters", MAX_DISPLAY_NAME)]
    DisplayNameLength,
    #[error("display_name must not contain control characters")]
    DisplayNameControl,
    #[error("bio must be at most {} characters", MAX_BIO)]
    BioLength,
    #[error("bio must not contain control characters")]
    BioControl,
    #[error(
        "avatar_url must be an https URL of at most {} characters",
        MAX_AVATAR_URL
    )]
    AvatarUrl,
    #[error("prefix must be at most {} characters", MAX_PREFIX)]
    PrefixLength,
    #[error("prefix must not contain control characters")]
    PrefixControl,
    #[error("limit must be 1 to {}", MAX_SEARCH_LIMIT)]
    Limit,
}

/// A display name: 1 to 64 characters, not only whitespace, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        let length = trimmed.chars().count();
        if length == 0 || length > MAX_DISPLAY_NAME {
            return Err(Invalid::DisplayNameLength);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(Invalid::DisplayNameControl);
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A bio: up to 500 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bio(String);

impl Bio {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.chars().count() > MAX_BIO {
            return Err(Invalid::BioLength);
        }
        if raw
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(Invalid::BioControl);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An avatar URL: absolute `https`, with a host, at most 2,048 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarUrl(String);

impl AvatarUrl {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.len() > MAX_AVATAR_URL || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Invalid::AvatarUrl);
        }
        let uri: http::Uri = raw.parse().map_err(|_| Invalid::AvatarUrl)?;
        let has_host = uri.host().is_some_and(|h| !h.is_empty());
        if uri.scheme_str() != Some("https") || !has_host {
            return Err(Invalid::AvatarUrl);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A directory search prefix, lower-cased (usernames are stored lower-case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let lower = raw.trim().to_lowercase();
        if lower.chars().count() > MAX_PREFIX {
            return Err(Invalid::PrefixLength);
        }
        if lower.chars().any(char::is_control) {
            return Err(Invalid::PrefixControl);
        }
        Ok(Self(lower))
    }

    /// The range of usernames starting with the prefix: `[from, to)`; `to` is `None` when the
    /// prefix is empty (everything).
    pub fn range(&self) -> (String, Option<String>) {
        let from = self.0.clone();
        let mut chars: Vec<char> = self.0.chars().collect();
        // The smallest string greater than every string with this prefix: bump the last
        // character that can be bumped and drop what follows it.
        while let Some(last) = chars.pop() {
            if let Some(next) = char::from_u32(last as u32 + 1) {
                chars.push(next);
                return (from, Some(chars.into_iter().collect()));
            }
        }
        (from, None)
    }
}

/// A search limit: 1 to 100, 20 when absent.
pub fn search_limit(raw: Option<u32>) -> Result<u32, Invalid> {
    match raw {
        None => Ok(DEFAULT_SEARCH_LIMIT),
        Some(limit) if (1..=MAX_SEARCH_LIMIT).contains(&limit) => Ok(limit),
        Some(_) => Err(Invalid::Limit),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_one_to_64_characters() {
        assert!(DisplayName::parse("Alice").is_ok());
        assert!(DisplayName::parse(&"é".repeat(64)).is_ok());
        let length = Err(Invalid::DisplayNameLength);
        assert_eq!(DisplayName::parse(&"é".repeat(65)), length);
        assert_eq!(DisplayName::parse("   "), length);
        assert_eq!(
            DisplayName::parse("a\u{0}b"),
            Err(Invalid::DisplayNameControl)
        );
        assert_eq!(DisplayName::parse("  Al  ").unwrap().into_inner(), "Al");
    }

    #[test]
    fn bios_are_at_most_500_characters() {
        assert!(Bio::parse("").is_ok());
        assert!(Bio::parse(&"x".repeat(500)).is_ok());
        assert_eq!(Bio::parse(&"x".repeat(501)), Err(Invalid::BioLength));
        assert_eq!(Bio::parse("a\u{7}b"), Err(Invalid::BioControl));
        assert!(Bio::parse("two\nlines").is_ok());
    }

    #[test]
    fn avatar_urls_are_https_with_a_host() {
        assert!(AvatarUrl::parse("https://img.example/a.png").is_ok());
        for bad in [
            "http://img.example/a.png",
            "https://",
            "img.example/a.png",
            "javascript:alert(1)",
            "https://exa mple.com/",
            "",
        ] {
            assert_eq!(AvatarUrl::parse(bad), Err(Invalid::AvatarUrl), "{bad}");
        }
        let long = format!("https://img.example/{}", "a".repeat(2048));
        assert_eq!(AvatarUrl::parse(&long), Err(Invalid::AvatarUrl));
        assert_eq!(
            Invalid::AvatarUrl.to_string(),
            "avatar_url must be an https URL of at most 2048 characters"
        );
    }

    #[test]
    fn a_prefix_covers_exactly_the_usernames_that_start_with_it() {
        let (from, to) = Prefix::parse("Al").unwrap().range();
        assert_eq!((from.as_str(), to.as_deref()), ("al", Some("am")));
        let (from, to) = Prefix::parse("").unwrap().range();
        assert_eq!((from.as_str(), to), ("", None));
        assert_eq!(Prefix::parse("a\u{0}"), Err(Invalid::PrefixControl));
        assert_eq!(Prefix::parse(&"a".repeat(33)), Err(Invalid::PrefixLength));
        assert_eq!(search_limit(None), Ok(20));
        assert_eq!(search_limit(Some(0)), Err(Invalid::Limit));
        assert_eq!(search_limit(Some(101)), Err(Invalid::Limit));
    }
}
