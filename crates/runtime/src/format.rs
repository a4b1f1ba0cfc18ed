//! How API.md writes values every service renders.

use time::{OffsetDateTime, macros::format_description};

/// RFC 3339, UTC, millisecond precision: `2026-11-26T21:33:48.217Z`.
pub fn timestamp(unix_ms: i64) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(&format)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn timestamps_have_exactly_millisecond_precision() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_795_728_999_120), "2026-11-26T21:36:39.120Z");
        assert_eq!(timestamp(1_795_728_999_007), "2026-11-26T21:36:39.007Z");
        assert_eq!(timestamp(1_795_728_999_999), "2026-11-26T21:36:39.999Z");
    }
}
