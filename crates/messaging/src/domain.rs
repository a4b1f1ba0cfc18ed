//! Values that are valid by construction, and the limits the API promises. No I/O here.

use uuid::Uuid;

/// Most members a group may have.
pub const MAX_GROUP_MEMBERS: usize = 1000;
/// Longest message body, in Unicode scalar values.
pub const MAX_BODY_CHARS: usize = 4000;
/// Longest group title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest client message id, in bytes.
pub const MAX_CLIENT_MSG_ID_LEN: usize = 128;
/// Default and largest history page.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

/// Why a value in a request is not acceptable. The messages are the API's `invalid_argument`
/// messages, which clients show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("kind must be \"direct\" or \"group\"")]
    Kind,
    #[error("body must be 1..={} characters", MAX_BODY_CHARS)]
    BodyLength,
    #[error("body must not contain NUL characters")]
    BodyNul,
    #[error(
        "client_msg_id must be 1..={} bytes without control characters",
        MAX_CLIENT_MSG_ID_LEN
    )]
    ClientMsgId,
    #[error("title must be at most {} characters", MAX_TITLE_CHARS)]
    TitleLength,
    #[error("title must not contain control characters")]
    TitleControl,
    #[error("{field} must contain user ids (UUIDs), got {raw:?}")]
    UserId { field: &'static str, raw: String },
    #[error("a direct conversation has exactly two members: you and one other user")]
    DirectMembers,
    #[error("a group has at most {} members", MAX_GROUP_MEMBERS)]
    GroupTooLarge,
    #[error("give after_seq or before_seq, not both")]
    BothCursors,
    #[error("after_seq must be >= 0")]
    AfterSeq,
    #[error("before_seq must be >= 1")]
    BeforeSeq,
    #[error("limit must be 1..={}", MAX_PAGE)]
    Limit,
}

/// `direct` or `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Group,
}

impl Kind {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "direct" => Ok(Kind::Direct),
            "group" => Ok(Kind::Group),
            _ => Err(Invalid::Kind),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Group => "group",
        }
    }
}

/// A message body: 1 to 4,000 Unicode scalar values, none of them NUL (which PostgreSQL's text
/// cannot hold; every other character, line breaks and tabs included, is the sender's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body(String);

impl Body {
    pub fn parse(raw: String) -> Result<Self, Invalid> {
        let chars = raw.chars().count();
        if chars == 0 || chars > MAX_BODY_CHARS {
            return Err(Invalid::BodyLength);
        }
        if raw.contains('\0') {
            return Err(Invalid::BodyNul);
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The client's idempotency key for a send: 1 to 128 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMsgId(String);

impl ClientMsgId {
    pub fn parse(raw: String) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.len() > MAX_CLIENT_MSG_ID_LEN || raw.chars().any(char::is_control)
        {
            return Err(Invalid::ClientMsgId);
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A group title: 1 to 200 characters, trimmed, no control characters; `None` for no title.
pub fn parse_title(raw: Option<String>) -> Result<Option<String>, Invalid> {
    match raw.map(|t| t.trim().to_owned()) {
        None => Ok(None),
        Some(t) if t.is_empty() => Ok(None),
        Some(t) if t.chars().count() > MAX_TITLE_CHARS => Err(Invalid::TitleLength),
        Some(t) if t.chars().any(char::is_control) => Err(Invalid::TitleControl),
        Some(t) => Ok(Some(t)),
    }
}

/// Parses a user id from the wire.
pub fn parse_user_id(raw: &str, field: &'static str) -> Result<Uuid, Invalid> {
    Uuid::parse_str(raw).map_err(|_| Invalid::UserId {
        field,
        raw: raw.to_owned(),
    })
}

/// The members of a new conversation: the caller plus `others`, deduplicated, checked against
/// the kind's rules. Returns them sorted (deterministic locking and events).
pub fn members_of(kind: Kind, caller: Uuid, others: &[Uuid]) -> Result<Vec<Uuid>, Invalid> {
    let mut members: Vec<Uuid> = others
        .iter()
        .copied()
        .chain(std::iter::once(caller))
        .collect();
    members.sort_unstable();
    members.dedup();
    match kind {
        Kind::Direct if members.len() != 2 => Err(Invalid::DirectMembers),
        Kind::Group if members.len() > MAX_GROUP_MEMBERS => Err(Invalid::GroupTooLarge),
        _ => Ok(members),
    }
}

/// The key that makes a pair's direct conversation unique.
pub fn direct_key(a: Uuid, b: Uuid) -> String {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    format!("{low}:{high}")
}

/// Which page of history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// Ascending, `seq > after`.
    After(i64),
    /// Descending, `seq < before`.
    Before(i64),
    /// Descending from the newest.
    Newest,
}

impl Page {
    pub fn parse(after: Option<i64>, before: Option<i64>) -> Result<Self, Invalid> {
        match (after, before) {
            (Some(_), Some(_)) => Err(Invalid::BothCursors),
            (Some(after), None) if after >= 0 => Ok(Page::After(after)),
            (None, Some(before)) if before >= 1 => Ok(Page::Before(before)),
            (Some(_), None) => Err(Invalid::AfterSeq),
            (None, Some(_)) => Err(Invalid::BeforeSeq),
            (None, None) => Ok(Page::Newest),
        }
    }
}

/// A page size: 1 to 200, absent meaning the default of 50.
pub fn page_limit(raw: Option<u32>) -> Result<i64, Invalid> {
    match raw {
        None => Ok(i64::from(DEFAULT_PAGE)),
        Some(limit @ 1..=MAX_PAGE) => Ok(i64::from(limit)),
        Some(_) => Err(Invalid::Limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_count_unicode_scalar_values() {
        assert_eq!(Body::parse(String::new()), Err(Invalid::BodyLength));
        assert!(Body::parse("é".repeat(4000)).is_ok());
        assert_eq!(Body::parse("😀".repeat(4001)), Err(Invalid::BodyLength));
        assert_eq!(
            Invalid::BodyLength.to_string(),
            "body must be 1..=4000 characters"
        );
    }

    #[test]
    fn bodies_keep_line_breaks_but_not_nul_and_titles_take_no_control_characters() {
        assert!(Body::parse("two\nlines\r\n\tand a tab".into()).is_ok());
        assert_eq!(Body::parse("a\u{0}b".into()), Err(Invalid::BodyNul));
        assert_eq!(
            parse_title(Some("  team  ".into())),
            Ok(Some("team".into()))
        );
        assert_eq!(
            parse_title(Some("a\u{0}b".into())),
            Err(Invalid::TitleControl)
        );
        assert_eq!(parse_title(Some("a\nb".into())), Err(Invalid::TitleControl));
        assert_eq!(
            parse_title(Some("t".repeat(201))),
            Err(Invalid::TitleLength)
        );
    }

    #[test]
    fn direct_conversations_need_exactly_one_other_person() {
        let (me, you, them) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(
            members_of(Kind::Direct, me, &[you, me]).map(|m| m.len()),
            Ok(2)
        );
        assert_eq!(
            members_of(Kind::Direct, me, &[me]),
            Err(Invalid::DirectMembers)
        );
        assert_eq!(
            members_of(Kind::Direct, me, &[you, them]),
            Err(Invalid::DirectMembers)
        );
        assert_eq!(direct_key(me, you), direct_key(you, me));
    }

    #[test]
    fn groups_are_capped_including_the_caller() {
        let me = Uuid::now_v7();
        let others: Vec<Uuid> = (0..MAX_GROUP_MEMBERS - 1).map(|_| Uuid::new_v4()).collect();
        assert!(members_of(Kind::Group, me, &others).is_ok());
        let too_many: Vec<Uuid> = (0..MAX_GROUP_MEMBERS).map(|_| Uuid::new_v4()).collect();
        assert_eq!(
            members_of(Kind::Group, me, &too_many),
            Err(Invalid::GroupTooLarge)
        );
    }

    #[test]
    fn pages_and_limits_are_checked() {
        assert_eq!(Page::parse(None, None), Ok(Page::Newest));
        assert_eq!(Page::parse(Some(0), None), Ok(Page::After(0)));
        assert_eq!(Page::parse(Some(1), Some(5)), Err(Invalid::BothCursors));
        assert_eq!(Page::parse(Some(-1), None), Err(Invalid::AfterSeq));
        assert_eq!(Page::parse(None, Some(0)), Err(Invalid::BeforeSeq));
        assert_eq!(page_limit(None), Ok(50));
        assert_eq!(page_limit(Some(200)), Ok(200));
        assert_eq!(page_limit(Some(0)), Err(Invalid::Limit));
        assert_eq!(page_limit(Some(201)), Err(Invalid::Limit));
        assert_eq!(Invalid::Limit.to_string(), "limit must be 1..=200");
    }

    #[test]
    fn bad_user_ids_name_the_field_and_the_value() {
        assert_eq!(
            parse_user_id("nope", "member_ids").map_err(|e| e.to_string()),
            Err("member_ids must contain user ids (UUIDs), got \"nope\"".to_owned())
        );
    }

    #[test]
    fn client_msg_ids_are_bounded() {
        for bad in [String::new(), "a".repeat(129), "line\nbreak".into()] {
            assert_eq!(ClientMsgId::parse(bad), Err(Invalid::ClientMsgId));
        }
        assert!(ClientMsgId::parse("3f1c-retry-1".into()).is_ok());
    }
}
