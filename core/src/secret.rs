//! Keys and tokens that must never reach a log: bot tokens, the API key of a pool of
//! servers.

use std::fmt;

/// A secret string: readable only through [`Secret::expose`], never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("tok".into())), "Secret(<redacted>)");
        assert_eq!(format!("{:?}", Some(Secret::from("tok"))), "Some(Secret(<redacted>))");
    }
}
