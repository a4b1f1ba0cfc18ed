//! Values that are valid by construction. No I/O here.

use std::fmt;

use realchat_runtime::rules::username;

/// Why a value in a request is not acceptable; the messages are the API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error(transparent)]
    Username(#[from] username::Invalid),
    #[error("password must be 8..=128 characters")]
    PasswordLength,
}

/// A username: 3 to 32 characters of `[a-z0-9_]`, lower-cased on the way in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Lower-cases `raw` and checks it.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = raw.to_ascii_lowercase();
        username::check(&name)?;
        Ok(Self(name))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password as given at registration: 8 to 128 characters. Never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Checks the length of a new password.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let len = raw.chars().count();
        if !(8..=128).contains(&len) {
            return Err(Invalid::PasswordLength);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The password's bytes, for hashing.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lower_cased_and_checked() {
        assert_eq!(
            Username::parse("Alice_01").map(|u| u.0),
            Ok("alice_01".to_owned())
        );
        let length = Err(Invalid::Username(username::Invalid::Length));
        let characters = Err(Invalid::Username(username::Invalid::Characters));
        assert_eq!(Username::parse("al"), length);
        assert_eq!(Username::parse(&"a".repeat(33)), length);
        assert_eq!(Username::parse("al ice"), characters);
        assert_eq!(Username::parse("ålice"), characters);
        assert_eq!(Username::parse("al-ice"), characters);
        assert!(Username::parse(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn passwords_are_counted_in_characters() {
        assert_eq!(
            Password::parse("1234567").map(|_| ()),
            Err(Invalid::PasswordLength)
        );
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"é".repeat(128)).is_ok());
        assert_eq!(
            Password::parse(&"é".repeat(129)).map(|_| ()),
            Err(Invalid::PasswordLength)
        );
        assert_eq!(
            format!("{:?}", Password::parse("hunter2hunter2")),
            "Ok(Password(***))"
        );
    }
}
