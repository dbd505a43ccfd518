//! Nurture's core: the domain, the rules, and the engine that runs lead nurture sequences.
//!
//! Architecture invariant: this crate knows nothing of HTTP or SQL. It talks to storage through
//! the [`store::Store`] trait, which each backend crate implements, and to time through
//! [`clock::Clock`].

pub mod clock;
pub mod domain;
pub mod engine;
pub mod error;
pub mod keys;
pub mod render;
pub mod rules;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod window;

pub use engine::{Engine, Principal};
pub use error::{Error, FieldError, Result};
