//! A value that must not end up in logs: [`Secret`]'s `Debug` and `Display` print
//! `[redacted]`, while serde reads and writes the value itself (`#[serde(transparent)]`),
//! so a secret field keeps its place in a file or a message.
//!
//! ```
//! use hearth_protocol::Secret;
//!
//! let token = Secret::new("hearth_et_abc".to_string());
//! assert_eq!(format!("{token:?} {token}"), "[redacted] [redacted]");
//! assert_eq!(token.expose(), "hearth_et_abc");
//! assert_eq!(serde_json::to_string(&token).unwrap(), r#""hearth_et_abc""#);
//! ```

use serde::{Deserialize, Serialize};

/// A value whose `Debug` and `Display` print `[redacted]`; [`expose`](Secret::expose) where
/// it is used.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> std::fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}
