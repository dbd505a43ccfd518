//! The behaviour suite (issue #2): every rule of the seed and every row of the defaults table,
//! driven through the engine on a manual clock, each test named after the rule it pins down and
//! run on every backend by `behaviour_test!`.

mod enrollment;
mod hitl;
mod idempotency;
mod lifecycle;
mod safety;
mod scheduler;
mod step_execution;

pub use nurture_behaviour::*;
pub use nurture_core::domain::*;
pub use nurture_core::engine::*;
pub use nurture_core::error::Error;
pub use serde_json::json;
