//! The HTTP API's integration tests, one binary (zero-to-production's layout): each test
//! starts its own server on a fresh database with a manual clock.

#[macro_use]
mod helpers;

mod approvals;
mod clock;
mod enrollments;
mod errors;
mod idempotency;
mod leads;
mod operations;
mod pagination;
mod sequences;
mod settings;
mod tasks_messages_activities;
mod templates;
