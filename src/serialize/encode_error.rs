//! The two errors every encoder returns: [`EncodeError`] (this payload does not fit the schema —
//! the row's fault) and [`SchemaError`] (the schema itself is unusable — nothing the row can fix).
//!
//! They are separate types because the relay acts differently on them: an `EncodeError` parks
//! the row with its text as the reason, a `SchemaError` concerns every row of that schema.

use std::fmt;

/// The payload does not fit the schema. Always the row's fault: the relay parks the row with
/// this text as the reason, so it must read well to a person.
///
/// `path` is a dotted field path into the payload (`metadata.source`, `changes[2].file`), empty
/// for the payload itself. Display names the field: ``field `changes[2].file`: expected a string,
/// got a number``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", Where(path))]
pub struct EncodeError {
    /// Dotted path of the offending value in the payload; empty for the root.
    pub path: String,
    /// What is wrong, in words (no type names from Rust).
    pub message: String,
}

/// Renders the "where" part of an [`EncodeError`] without allocating.
struct Where<'a>(&'a str);

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("payload")
        } else {
            write!(f, "field `{}`", self.0)
        }
    }
}

impl EncodeError {
    /// An error about the value at the root of what is being encoded; callers up the stack
    /// prepend their field names with [`EncodeError::in_field`] / [`EncodeError::at_index`].
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            path: String::new(),
            message: message.into(),
        }
    }

    /// An error about a named field of the current value.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Prepends an object key (`name`) to the path: `file` becomes `changes.file`.
    #[must_use]
    pub fn in_field(mut self, name: &str) -> Self {
        self.path = if self.path.is_empty() {
            name.to_owned()
        } else if self.path.starts_with('[') {
            format!("{name}{}", self.path)
        } else {
            format!("{name}.{}", self.path)
        };
        self
    }

    /// Prepends an array index to the path: `file` becomes `[2].file`.
    #[must_use]
    pub fn at_index(mut self, index: usize) -> Self {
        self.path = if self.path.is_empty() || self.path.starts_with('[') {
            format!("[{index}]{}", self.path)
        } else {
            format!("[{index}].{}", self.path)
        };
        self
    }
}

/// The schema itself cannot be used to encode anything: bad schema text, unsupported
/// references, no message type. Not the row's fault; every row of this schema id would fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unusable schema: {0}")]
pub struct SchemaError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_field_or_the_payload() {
        assert_eq!(
            EncodeError::new("expected an object").to_string(),
            "payload: expected an object"
        );
        let e = EncodeError::new("expected a string")
            .in_field("file")
            .at_index(2)
            .in_field("changes");
        assert_eq!(e.path, "changes[2].file");
        assert_eq!(e.to_string(), "field `changes[2].file`: expected a string");
    }

    #[test]
    fn nested_indexes_and_fields_compose_into_a_dotted_path() {
        let e = EncodeError::at("source", "missing").in_field("metadata");
        assert_eq!(e.path, "metadata.source");
        assert_eq!(EncodeError::new("x").at_index(1).at_index(0).path, "[0][1]");
    }

    #[test]
    fn schema_error_reads_as_a_sentence() {
        assert_eq!(
            SchemaError("no message type".into()).to_string(),
            "unusable schema: no message type"
        );
    }
}
