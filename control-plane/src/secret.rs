//! A value that must not end up in logs: `Debug` and `Display` print `[redacted]`. One type
//! for the whole workspace, defined in `hearth_protocol::secret`.

pub use hearth_protocol::Secret;
