//! Tenant settings and their defaults (SPEC section 6, the settings row of section 5).

use serde::{Deserialize, Serialize};

use crate::domain::TimeZoneName;
use crate::error::{FieldError, Result};
use crate::window::SendingWindow;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// Outbound messages allowed per lead per window (seed: "max 1 outbound message per 48 hours").
    pub max_messages_per_window: u32,
    pub message_window_hours: u32,
    /// Seed: "max 6 sequence steps over 21 days".
    pub max_steps: u32,
    pub max_span_days: u32,
    /// Seed: "re-enrollment cooldown: 30 days".
    pub reenrollment_cooldown_days: u32,
    /// Seed: "no open reply thread in last N days".
    pub reply_window_days: u32,
    /// Seed: "score_band is warm (or tenant-defined)".
    pub warm_score_bands: Vec<String>,
    /// Seed: "pre-approved templates can run without per-step review when tenant policy allows".
    pub preapproved_skip_review: bool,
    pub sending_window: Option<SendingWindow>,
    /// The zone for leads that have none.
    pub timezone: TimeZoneName,
    pub from_email: Option<String>,
    pub from_name: Option<String>,
    pub postal_address: Option<String>,
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings {
            max_messages_per_window: 1,
            message_window_hours: 48,
            max_steps: 6,
            max_span_days: 21,
            reenrollment_cooldown_days: 30,
            reply_window_days: 14,
            warm_score_bands: vec!["warm".into()],
            preapproved_skip_review: false,
            sending_window: None,
            timezone: TimeZoneName::utc(),
            from_email: None,
            from_name: None,
            postal_address: None,
        }
    }
}

impl TenantSettings {
    /// Apply a JSON merge-patch (RFC 7396 style, one level) and validate the result as a whole.
    /// Errors name the setting (`settings.max_steps`).
    pub fn patched(&self, patch: &serde_json::Value) -> Result<TenantSettings> {
        let serde_json::Value::Object(changes) = patch else {
            return Err(crate::Error::invalid("settings", "expected a JSON object"));
        };
        let mut merged = serde_json::to_value(self).map_err(crate::Error::store)?;
        let target = merged
            .as_object_mut()
            .expect("settings serialize to an object");
        let mut errors = Vec::new();
        for (key, value) in changes {
            if !target.contains_key(key) {
                errors.push(FieldError::new(
                    format!("settings.{key}"),
                    "unknown setting",
                ));
                continue;
            }
            target.insert(key.clone(), value.clone());
        }
        if !errors.is_empty() {
            return Err(crate::Error::Invalid(errors));
        }
        let settings = TenantSettings::from_json(&merged)?;
        Ok(settings)
    }

    /// Parse stored or submitted settings, naming the setting that is wrong.
    pub fn from_json(value: &serde_json::Value) -> Result<TenantSettings> {
        let mut errors = Vec::new();
        let parsed: Option<TenantSettings> = match serde_path_error(value) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        if let Some(s) = &parsed {
            if s.max_messages_per_window == 0 {
                errors.push(FieldError::new(
                    "settings.max_messages_per_window",
                    "must be at least 1",
                ));
            }
            if s.message_window_hours == 0 {
                errors.push(FieldError::new(
                    "settings.message_window_hours",
                    "must be at least 1",
                ));
            }
            if s.max_steps == 0 {
                errors.push(FieldError::new("settings.max_steps", "must be at least 1"));
            }
            if let Some(from) = &s.from_email
                && let Err(e) = crate::domain::EmailAddress::parse(from)
            {
                errors.push(FieldError::new("settings.from_email", e.0));
            }
        }
        match parsed {
            Some(s) if errors.is_empty() => Ok(s),
            _ => Err(crate::Error::Invalid(errors)),
        }
    }
}

/// Deserialize settings, turning serde's message into a field error at the setting's path.
fn serde_path_error(value: &serde_json::Value) -> std::result::Result<TenantSettings, FieldError> {
    // Look for the first key that fails on its own, so the error names it; fall back to the
    // whole object's message.
    if let serde_json::Value::Object(map) = value {
        for (key, v) in map {
            let mut probe = serde_json::Map::new();
            probe.insert(key.clone(), v.clone());
            if let Err(e) =
                serde_json::from_value::<TenantSettings>(serde_json::Value::Object(probe))
            {
                return Err(FieldError::new(
                    format!("settings.{key}"),
                    strip_serde_position(&e),
                ));
            }
        }
    }
    serde_json::from_value(value.clone())
        .map_err(|e| FieldError::new("settings", strip_serde_position(&e)))
}

fn strip_serde_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
