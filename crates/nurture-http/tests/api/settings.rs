//! `/v1/settings` (SPEC section 6).

use serde_json::json;

use crate::helpers::spawn_app;

api_test!(settings_start_at_the_defaults_and_patch_merges, {
    let app = spawn_app().await;
    let s = app.get("/v1/settings").await.ok(200).clone();
    assert_eq!(
        s,
        json!({"max_messages_per_window": 1, "message_window_hours": 48, "max_steps": 6, "max_span_days": 21,
               "reenrollment_cooldown_days": 30, "reply_window_days": 14, "warm_score_bands": ["warm"],
               "preapproved_skip_review": false, "sending_window": null, "timezone": "UTC",
               "from_email": null, "from_name": null, "postal_address": null})
    );
    let window = json!({"days": ["mon", "tue"], "start": "09:00", "end": "17:00"});
    let p = app
        .patch(
            "/v1/settings",
            json!({"max_steps": 3, "sending_window": window, "from_email": "hi@example.com"}),
        )
        .await;
    let p = p.ok(200);
    assert_eq!(
        (
            p["max_steps"].clone(),
            p["sending_window"].clone(),
            p["max_span_days"].clone()
        ),
        (json!(3), window, json!(21))
    );
    assert_eq!(app.get("/v1/settings").await.ok(200), p);
    let cleared = app
        .patch("/v1/settings", json!({"sending_window": null}))
        .await;
    assert_eq!(cleared.ok(200)["sending_window"], serde_json::Value::Null);
});

api_test!(bad_settings_are_422_naming_the_setting, {
    let app = spawn_app().await;
    for (body, path) in [
        (json!({"bogus": 1}), "settings.bogus"),
        (json!({"max_steps": "many"}), "settings.max_steps"),
        (json!({"max_steps": 0}), "settings.max_steps"),
        (json!({"from_email": "nope"}), "settings.from_email"),
        (
            json!({"sending_window": {"days": [], "start": "09:00", "end": "17:00"}}),
            "settings.sending_window",
        ),
        (json!({"timezone": "Mars/Olympus"}), "settings.timezone"),
    ] {
        let r = app.patch("/v1/settings", body.clone()).await;
        r.problem(422);
        assert_eq!(r.error_paths(), [path], "{body}");
    }
    app.patch("/v1/settings", json!([1])).await.problem(422);
    assert_eq!(app.get("/v1/settings").await.ok(200)["max_steps"], 6);
});
