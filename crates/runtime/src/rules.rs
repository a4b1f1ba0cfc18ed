//! Rules of API.md that more than one service applies, so they are written once.

/// Usernames: 3 to 32 characters of `[a-z0-9_]`, stored lower-cased. Auth applies it at
/// registration; profile to the names that registration events carry.
pub mod username {
    /// Why a name is not a username; the message is the API's.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum Invalid {
        #[error("username must be 3..=32 characters")]
        Length,
        #[error("username may contain only a-z, 0-9 and _")]
        Characters,
    }

    /// Whether `name` (already lower-cased) is a username.
    pub fn check(name: &str) -> Result<(), Invalid> {
        if !(3..=32).contains(&name.chars().count()) {
            return Err(Invalid::Length);
        }
        if !name.chars().all(allowed) {
            return Err(Invalid::Characters);
        }
        Ok(())
    }

    /// Whether `c` may be part of a (lower-cased) username.
    pub fn allowed(c: char) -> bool {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn three_to_thirty_two_of_a_to_z_digits_and_underscores() {
            for ok in ["abc", "a_1", &"x".repeat(32)] {
                assert_eq!(check(ok), Ok(()), "{ok}");
            }
            assert_eq!(check("ab"), Err(Invalid::Length));
            assert_eq!(check(&"x".repeat(33)), Err(Invalid::Length));
            for bad in ["Abc", "a-b", "a b", "émile"] {
                assert_eq!(check(bad), Err(Invalid::Characters), "{bad}");
            }
            assert_eq!(
                Invalid::Characters.to_string(),
                "username may contain only a-z, 0-9 and _"
            );
        }
    }
}
