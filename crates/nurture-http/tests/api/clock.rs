//! `/v1/clock` (SPEC section 5 "Manual clock").

use serde_json::json;

use crate::helpers::{Options, START, email_step, spawn_app, spawn_app_with};

api_test!(the_clock_reads_and_advances, {
    let app = spawn_app().await;
    assert_eq!(app.get("/v1/clock").await.ok(200)["now"], START);
    assert_eq!(app.advance_hours(24.0).await["now"], "2026-01-06T09:00:00Z");
    assert_eq!(app.advance_hours(0.5).await["now"], "2026-01-06T09:30:00Z");
    let to = app
        .post("/v1/clock/advance", json!({"to": "2026-01-10T00:00:00Z"}))
        .await;
    assert_eq!(to.ok(200)["now"], "2026-01-10T00:00:00Z");
    assert_eq!(
        app.get("/v1/clock").await.ok(200)["now"],
        "2026-01-10T00:00:00Z"
    );
});

api_test!(advancing_runs_the_work_that_falls_due, {
    let app = spawn_app().await;
    app.auto_sequence(json!([email_step(1, 0), email_step(2, 72)]))
        .await;
    let lead = app.create_lead(json!({})).await;
    app.advance_hours(24.0 * 4.0).await;
    let sent = app
        .all(&format!(
            "/v1/messages?lead_id={}",
            lead["id"].as_str().unwrap()
        ))
        .await;
    let times: Vec<&str> = sent
        .iter()
        .map(|m| m["created_at"].as_str().unwrap())
        .collect();
    assert_eq!(times, ["2026-01-05T09:00:00Z", "2026-01-08T09:00:00Z"]);
});

api_test!(a_bad_advance_is_422, {
    let app = spawn_app().await;
    let back = app
        .post("/v1/clock/advance", json!({"to": "2020-01-01T00:00:00Z"}))
        .await;
    back.problem(422);
    assert_eq!(back.error_paths(), ["to"]);
    app.post("/v1/clock/advance", json!({})).await.problem(422);
    app.post("/v1/clock/advance", json!({"hours": 1, "to": START}))
        .await
        .problem(422);
    let negative = app.post("/v1/clock/advance", json!({"hours": -1})).await;
    negative.problem(422);
    assert_eq!(negative.error_paths(), ["hours"]);
    let not_a_time = app
        .post("/v1/clock/advance", json!({"to": "tomorrow"}))
        .await;
    not_a_time.problem(422);
    assert_eq!(not_a_time.error_paths(), ["to"]);
    assert_eq!(app.get("/v1/clock").await.ok(200)["now"], START);
});

api_test!(without_the_manual_clock_the_endpoints_do_not_exist, {
    let app = spawn_app_with(Options {
        manual_clock: false,
        ..Options::default()
    })
    .await;
    app.get("/v1/clock").await.problem(404);
    app.post("/v1/clock/advance", json!({"hours": 1}))
        .await
        .problem(404);
    let doc = app.get("/openapi.json").await.ok(200).clone();
    assert!(doc["paths"].get("/v1/clock").is_none());
    assert!(doc["paths"].get("/v1/clock/advance").is_none());
});
