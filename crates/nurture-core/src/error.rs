//! The core's error type. Each variant says what kind of failure it is, so the HTTP edge can map
//! it to a status without guessing: `Invalid` is 422 with paths, `NotFound` 404, `Conflict` 409.

use serde::Serialize;

/// One problem in the input, located by its JSON path (`entry_rules.when.all[1].op`) or field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input was understood but some values are wrong (422).
    #[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The request is well-formed but the state of things forbids it (422), e.g. enrolling a
    /// do-not-contact lead or activating a sequence whose template is missing.
    #[error("{0}")]
    Unprocessable(String),
    /// No such object in this tenant (404). Another tenant's object is "not found" too.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The object is not in a state that allows this (409), e.g. an illegal lifecycle
    /// transition or a lead already enrolled; `conflicting` names the object in the way.
    #[error("{message}")]
    Conflict {
        message: String,
        conflicting: Option<serde_json::Value>,
    },
    /// Storage or another dependency failed; logged once at the edge, answered as a 500.
    #[error("storage error: {0}")]
    Store(#[source] BoxError),
}

impl Error {
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid(vec![FieldError::new(path, message)])
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict {
            message: message.into(),
            conflicting: None,
        }
    }
    pub fn store(e: impl Into<BoxError>) -> Self {
        Error::Store(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
