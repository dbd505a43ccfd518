//! `/v1/clock` (SPEC section 5 "Manual clock"): present only under `serve --clock manual`.
//! Reading it tells the engine's time; advancing it runs everything that falls due on the way,
//! in time order, and answers once that is done.

use axum::Json;
use axum::extract::State;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonValue, Tenant, from_json};
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(get_clock))
        .routes(routes!(advance_clock))
}

/// The most one advance may move: ten years.
const MAX_HOURS: f64 = 24.0 * 366.0 * 10.0;

#[derive(Serialize, ToSchema)]
#[schema(as = Clock)]
struct ClockView {
    #[schema(value_type = String, format = DateTime)]
    now: Timestamp,
}

/// An advance as sent, read first so that each problem keeps its path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceFields {
    hours: Option<f64>,
    to: Option<Timestamp>,
}

/// How far to move: `{"hours": N}` or `{"to": RFC3339}`, exactly one.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(as = ClockAdvance)]
enum Advance {
    /// Hours to move forward (fractions allowed).
    Hours {
        #[schema(minimum = 0, maximum = 87840)]
        hours: f64,
    },
    /// The instant to move to; not before now.
    To {
        #[schema(value_type = String, format = DateTime)]
        to: Timestamp,
    },
}

impl Advance {
    fn from_json(value: serde_json::Value) -> ApiResult<Advance> {
        let f: AdvanceFields = from_json(value, "")?;
        match (f.hours, f.to) {
            (Some(hours), None) => Ok(Advance::Hours { hours }),
            (None, Some(to)) => Ok(Advance::To { to }),
            _ => Err(ApiError::invalid(
                "hours",
                "give exactly one of `hours` and `to`",
            )),
        }
    }

    fn target(&self, now: Timestamp) -> ApiResult<Timestamp> {
        match *self {
            Advance::Hours { hours } => {
                if !(hours.is_finite() && (0.0..=MAX_HOURS).contains(&hours)) {
                    return Err(ApiError::invalid(
                        "hours",
                        format!("hours must be between 0 and {MAX_HOURS}"),
                    ));
                }
                let micros = (hours * 3_600_000_000.0).round() as i64;
                now.checked_add(SignedDuration::from_micros(micros))
                    .map_err(|_| ApiError::invalid("hours", "that is past the end of time"))
            }
            Advance::To { to } => Ok(to),
        }
    }
}

/// The engine's current time.
#[utoipa::path(get, path = "/v1/clock", tag = "clock",
    responses((status = 200, description = "The time", body = ClockView)))]
async fn get_clock(State(state): State<AppState>, Tenant(_): Tenant) -> Json<ClockView> {
    Json(ClockView {
        now: state.engine.now(),
    })
}

/// Moves the clock forward, running all work that falls due up to the new time, and answers
/// when it is done. Exempt from the request timeout; the work runs to the end even if the
/// client goes away.
#[utoipa::path(post, path = "/v1/clock/advance", tag = "clock",
    request_body = Advance,
    responses((status = 200, description = "The new time, after the work due was done", body = ClockView)))]
async fn advance_clock(
    State(state): State<AppState>,
    Tenant(_): Tenant,
    JsonValue(body): JsonValue,
) -> ApiResult<Json<ClockView>> {
    let target = Advance::from_json(body)?.target(state.engine.now())?;
    let engine = state.engine.clone();
    let now = tokio::spawn(async move { engine.advance_to(target).await })
        .await
        .map_err(|e| ApiError::Internal(format!("the clock advance failed: {e}")))??;
    Ok(Json(ClockView { now }))
}
