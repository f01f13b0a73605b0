//! STUB (replaced by the encoders branch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{path}`: {message}")]
pub struct EncodeError {
    pub path: String,
    pub message: String,
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);
