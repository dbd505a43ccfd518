//! `/v1/settings` (SPEC sections 5 and 6): the tenant's policy. `PATCH` merges the fields given
//! into the current settings and the engine validates the result as a whole.

use axum::Json;
use axum::extract::State;
use nurture_core::settings::TenantSettings;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::{JsonValue, Tenant, double_option, from_json};
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(get_settings, patch_settings))
}

/// Days and hours when email may go out, in the lead's own time zone.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SendingWindowView {
    /// `mon` ... `sun`.
    #[schema(min_items = 1, inline, value_type = Vec<Weekday>)]
    days: Vec<String>,
    /// `HH:MM`, inclusive; before `end`.
    #[schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    start: String,
    /// `HH:MM`, exclusive; `24:00` means until midnight.
    #[schema(pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]
    end: String,
}

/// A day of the week, as the sending window names it.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Documentation only: the window's days are the core's text.
enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// The tenant's policy (SPEC section 6), defaults in brackets in each description.
#[derive(Serialize, ToSchema)]
#[schema(as = Settings)]
struct SettingsView {
    /// Outbound messages allowed per lead per window [1].
    max_messages_per_window: u32,
    /// The frequency cap's window in hours [48].
    message_window_hours: u32,
    /// Steps per sequence [6].
    max_steps: u32,
    /// Total span of a sequence's delays, in days [21].
    max_span_days: u32,
    /// Days before a lead may enter the same sequence again [30].
    reenrollment_cooldown_days: u32,
    /// "No open reply thread in the last N days" for entry [14].
    reply_window_days: u32,
    /// The score bands entry rules take as warm [`["warm"]`].
    warm_score_bands: Vec<String>,
    /// Pre-approved templates skip review on steps that require approval [false].
    preapproved_skip_review: bool,
    /// null: any time.
    sending_window: Option<SendingWindowView>,
    /// The zone for leads without one [UTC].
    #[schema(schema_with = crate::schema::time_zone_ref)]
    timezone: String,
    from_email: Option<String>,
    from_name: Option<String>,
    postal_address: Option<String>,
}

impl From<TenantSettings> for SettingsView {
    fn from(s: TenantSettings) -> Self {
        let TenantSettings {
            max_messages_per_window,
            message_window_hours,
            max_steps,
            max_span_days,
            reenrollment_cooldown_days,
            reply_window_days,
            warm_score_bands,
            preapproved_skip_review,
            sending_window,
            timezone,
            from_email,
            from_name,
            postal_address,
        } = s;
        SettingsView {
            max_messages_per_window,
            message_window_hours,
            max_steps,
            max_span_days,
            reenrollment_cooldown_days,
            reply_window_days,
            warm_score_bands,
            preapproved_skip_review,
            // The window's own serde form is the wire form; the view only documents it.
            sending_window: sending_window
                .and_then(|w| serde_json::to_value(w).ok())
                .and_then(|v| serde_json::from_value(v).ok()),
            timezone: timezone.as_str().to_string(),
            from_email,
            from_name,
            postal_address,
        }
    }
}

/// The settings to change; the others keep their values. Checked for shape here and as a
/// whole by the engine; errors name `settings.<setting>`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "parsed for its shape and its schema; the engine merges the JSON itself"
)]
struct SettingsPatch {
    #[schema(value_type = i64, required = false, minimum = 1, maximum = 4294967295.0)]
    max_messages_per_window: Option<u32>,
    #[schema(value_type = i64, required = false, minimum = 1, maximum = 4294967295.0)]
    message_window_hours: Option<u32>,
    #[schema(value_type = i64, required = false, minimum = 1, maximum = 4294967295.0)]
    max_steps: Option<u32>,
    #[schema(value_type = i64, required = false, minimum = 0, maximum = 4294967295.0)]
    max_span_days: Option<u32>,
    #[schema(value_type = i64, required = false, minimum = 0, maximum = 4294967295.0)]
    reenrollment_cooldown_days: Option<u32>,
    #[schema(value_type = i64, required = false, minimum = 0, maximum = 4294967295.0)]
    reply_window_days: Option<u32>,
    #[schema(nullable = false)]
    warm_score_bands: Option<Vec<String>>,
    #[schema(nullable = false)]
    preapproved_skip_review: Option<bool>,
    /// null: any time.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<SendingWindowView>)]
    sending_window: Option<Option<serde_json::Value>>,
    /// An IANA zone name.
    #[schema(schema_with = crate::schema::time_zone_ref)]
    timezone: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = Email)]
    from_email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    from_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    postal_address: Option<Option<String>>,
}

/// The tenant's settings.
#[utoipa::path(get, path = "/v1/settings", tag = "settings",
    responses((status = 200, description = "The settings", body = SettingsView)))]
async fn get_settings(
    State(state): State<AppState>,
    Tenant(p): Tenant,
) -> ApiResult<Json<SettingsView>> {
    Ok(Json(state.engine.get_settings(p).await?.into()))
}

/// Changes some settings.
#[utoipa::path(patch, path = "/v1/settings", tag = "settings",
    request_body = SettingsPatch,
    responses((status = 200, description = "The settings as they are now", body = SettingsView)))]
async fn patch_settings(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    JsonValue(value): JsonValue,
) -> ApiResult<Json<SettingsView>> {
    let _shape: SettingsPatch = from_json(value.clone(), "settings")?;
    Ok(Json(state.engine.patch_settings(p, &value).await?.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patch type lists exactly the settings the core has: a setting added to the core
    /// must be added here too, or PATCH would refuse it as unknown.
    #[test]
    fn the_patch_knows_every_setting() {
        let core = serde_json::to_value(TenantSettings::default()).unwrap();
        let keys: Vec<&String> = core.as_object().unwrap().keys().collect();
        let patch = serde_json::Value::Object(
            keys.iter()
                .map(|k| ((*k).clone(), serde_json::Value::Null))
                .collect(),
        );
        let parsed: Result<SettingsPatch, _> = serde_json::from_value(patch);
        assert!(parsed.is_ok(), "{parsed:?}", parsed = parsed.err());
    }
}
