//! Rules of API.md that more than one service applies, so they are written once.

/// Usernames: 3 to 32 characters of `[a-z0-9_]`, stored lower-cased. Auth applies it at
/// registration; profile to the names that registration events carry.
pub mod username {
    /// Why `name` (already lower-cased) is not a username, in the API's words; `Ok` when it is.
    pub fn check(name: &str) -> Result<(), &'static str> {
        if !(3..=32).contains(&name.chars().count()) {
            return Err("username must be 3..=32 characters");
        }
        if !name.chars().all(allowed) {
            return Err("username may contain only a-z, 0-9 and _");
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
            assert!(check("ab").is_err());
            assert!(check(&"x".repeat(33)).is_err());
            for bad in ["Abc", "a-b", "a b", "émile"] {
                assert_eq!(
                    check(bad),
                    Err("username may contain only a-z, 0-9 and _"),
                    "{bad}"
                );
            }
        }
    }
}
