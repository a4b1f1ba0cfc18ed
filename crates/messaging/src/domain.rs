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

/// `direct` or `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Group,
}

impl Kind {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "direct" => Ok(Kind::Direct),
            "group" => Ok(Kind::Group),
            _ => Err("kind must be \"direct\" or \"group\"".into()),
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
    pub fn parse(raw: String) -> Result<Self, String> {
        let chars = raw.chars().count();
        if chars == 0 || chars > MAX_BODY_CHARS {
            return Err(format!("body must be 1..={MAX_BODY_CHARS} characters"));
        }
        if raw.contains('\0') {
            return Err("body must not contain NUL characters".into());
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
    pub fn parse(raw: String) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_CLIENT_MSG_ID_LEN || raw.chars().any(char::is_control)
        {
            return Err(format!(
                "client_msg_id must be 1..={MAX_CLIENT_MSG_ID_LEN} bytes without control characters"
            ));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A group title: 1 to 200 characters, trimmed, no control characters; `None` for no title.
pub fn parse_title(raw: Option<String>) -> Result<Option<String>, String> {
    match raw.map(|t| t.trim().to_owned()) {
        None => Ok(None),
        Some(t) if t.is_empty() => Ok(None),
        Some(t) if t.chars().count() > MAX_TITLE_CHARS => Err(format!(
            "title must be at most {MAX_TITLE_CHARS} characters"
        )),
        Some(t) if t.chars().any(char::is_control) => {
            Err("title must not contain control characters".into())
        }
        Some(t) => Ok(Some(t)),
    }
}

/// Parses a user id from the wire.
pub fn parse_user_id(raw: &str, field: &str) -> Result<Uuid, String> {
    Uuid::parse_str(raw).map_err(|_| format!("{field} must contain user ids (UUIDs), got {raw:?}"))
}

/// The members of a new conversation: the caller plus `others`, deduplicated, checked against
/// the kind's rules. Returns them sorted (deterministic locking and events).
pub fn members_of(kind: Kind, caller: Uuid, others: &[Uuid]) -> Result<Vec<Uuid>, String> {
    let mut members: Vec<Uuid> = others
        .iter()
        .copied()
        .chain(std::iter::once(caller))
        .collect();
    members.sort_unstable();
    members.dedup();
    match kind {
        Kind::Direct if members.len() != 2 => {
            Err("a direct conversation has exactly two members: you and one other user".into())
        }
        Kind::Group if members.len() > MAX_GROUP_MEMBERS => {
            Err(format!("a group has at most {MAX_GROUP_MEMBERS} members"))
        }
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
    pub fn parse(after: Option<i64>, before: Option<i64>) -> Result<Self, String> {
        match (after, before) {
            (Some(_), Some(_)) => Err("give after_seq or before_seq, not both".into()),
            (Some(after), None) if after >= 0 => Ok(Page::After(after)),
            (None, Some(before)) if before >= 1 => Ok(Page::Before(before)),
            (Some(_), None) => Err("after_seq must be >= 0".into()),
            (None, Some(_)) => Err("before_seq must be >= 1".into()),
            (None, None) => Ok(Page::Newest),
        }
    }
}

/// A page size: 1 to 200, absent meaning the default of 50.
pub fn page_limit(raw: Option<u32>) -> Result<i64, String> {
    match raw {
        None => Ok(i64::from(DEFAULT_PAGE)),
        Some(limit @ 1..=MAX_PAGE) => Ok(i64::from(limit)),
        Some(_) => Err(format!("limit must be 1..={MAX_PAGE}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_count_unicode_scalar_values() {
        assert!(Body::parse(String::new()).is_err());
        assert!(Body::parse("é".repeat(4000)).is_ok());
        assert!(Body::parse("😀".repeat(4001)).is_err());
    }

    #[test]
    fn bodies_keep_line_breaks_but_not_nul_and_titles_take_no_control_characters() {
        assert!(Body::parse("two\nlines\r\n\tand a tab".into()).is_ok());
        assert!(Body::parse("a\u{0}b".into()).is_err());
        assert_eq!(
            parse_title(Some("  team  ".into())),
            Ok(Some("team".into()))
        );
        assert!(parse_title(Some("a\u{0}b".into())).is_err());
        assert!(parse_title(Some("a\nb".into())).is_err());
    }

    #[test]
    fn direct_conversations_need_exactly_one_other_person() {
        let (me, you, them) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(
            members_of(Kind::Direct, me, &[you, me]).map(|m| m.len()),
            Ok(2)
        );
        assert!(members_of(Kind::Direct, me, &[me]).is_err());
        assert!(members_of(Kind::Direct, me, &[you, them]).is_err());
        assert_eq!(direct_key(me, you), direct_key(you, me));
    }

    #[test]
    fn groups_are_capped_including_the_caller() {
        let me = Uuid::now_v7();
        let others: Vec<Uuid> = (0..MAX_GROUP_MEMBERS - 1).map(|_| Uuid::new_v4()).collect();
        assert!(members_of(Kind::Group, me, &others).is_ok());
        let too_many: Vec<Uuid> = (0..MAX_GROUP_MEMBERS).map(|_| Uuid::new_v4()).collect();
        assert!(members_of(Kind::Group, me, &too_many).is_err());
    }

    #[test]
    fn pages_and_limits_are_checked() {
        assert_eq!(Page::parse(None, None), Ok(Page::Newest));
        assert_eq!(Page::parse(Some(0), None), Ok(Page::After(0)));
        assert!(Page::parse(Some(1), Some(5)).is_err());
        assert!(Page::parse(Some(-1), None).is_err());
        assert!(Page::parse(None, Some(0)).is_err());
        assert_eq!(page_limit(None), Ok(50));
        assert_eq!(page_limit(Some(200)), Ok(200));
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(201)).is_err());
    }

    #[test]
    fn client_msg_ids_are_bounded() {
        assert!(ClientMsgId::parse(String::new()).is_err());
        assert!(ClientMsgId::parse("a".repeat(129)).is_err());
        assert!(ClientMsgId::parse("line\nbreak".into()).is_err());
        assert!(ClientMsgId::parse("3f1c-retry-1".into()).is_ok());
    }
}
