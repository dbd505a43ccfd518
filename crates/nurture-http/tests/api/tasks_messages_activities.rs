//! `/v1/tasks`, `/v1/messages` and `/v1/activities`.

use serde_json::json;

use crate::helpers::{email_step, id, spawn_app};

api_test!(a_task_step_waits_until_the_task_is_done, {
    let app = spawn_app().await;
    let task_step = json!({"step_order": 1, "channel": "call_reminder", "delay_hours": 0});
    app.auto_sequence(json!([task_step, email_step(2, 0)]))
        .await;
    let lead = app.create_lead(json!({})).await;
    app.advance_hours(1.0).await;
    let open = app.all("/v1/tasks?status=open").await;
    assert_eq!(open.len(), 1);
    let t = &open[0];
    for key in [
        "id",
        "enrollment_id",
        "lead_id",
        "step_order",
        "channel",
        "status",
        "due_at",
    ] {
        assert!(t.get(key).is_some(), "{key} missing from {t}");
    }
    assert_eq!(
        (t["channel"].clone(), t["lead_id"].clone()),
        (json!("call_reminder"), lead["id"].clone())
    );
    assert_eq!(
        app.enrollments_of(id(&lead)).await[0]["paused_reason"],
        "awaiting_task"
    );

    let done = app
        .post_empty(&format!("/v1/tasks/{}/complete", id(t)))
        .await;
    assert_eq!(done.ok(200)["status"], "done");
    app.post_empty(&format!("/v1/tasks/{}/complete", id(t)))
        .await
        .problem(409);
    assert!(app.all("/v1/tasks?status=open").await.is_empty());
    assert_eq!(app.enrollments_of(id(&lead)).await[0]["status"], "active");
    app.post_empty("/v1/tasks/0190f0f0-0000-7000-8000-000000000000/complete")
        .await
        .problem(404);
});

api_test!(messages_and_activities_tell_what_happened, {
    let app = spawn_app().await;
    app.auto_sequence(json!([email_step(1, 0), email_step(2, 24)]))
        .await;
    let lead = app.create_lead(json!({})).await;
    app.advance_hours(24.0 * 4.0).await;

    let sent = app
        .all(&format!("/v1/messages?lead_id={}", id(&lead)))
        .await;
    let times: Vec<_> = sent
        .iter()
        .map(|m| m["created_at"].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        ["2026-01-05T09:00:00Z", "2026-01-07T09:00:00Z"],
        "the cap defers step 2 to 48 h"
    );
    let m = &sent[0];
    for key in [
        "id",
        "enrollment_id",
        "lead_id",
        "step_order",
        "to",
        "subject",
        "body",
        "headers",
        "status",
        "created_at",
        "sent_at",
    ] {
        assert!(m.get(key).is_some(), "{key} missing from {m}");
    }
    assert_eq!(
        (m["to"].clone(), m["subject"].clone(), m["status"].clone()),
        (lead["email"].clone(), json!("Hello Ada"), json!("queued"))
    );
    assert_eq!(app.all("/v1/messages?status=queued").await.len(), 2);
    assert!(app.all("/v1/messages?status=sent").await.is_empty());

    let log = app
        .all(&format!("/v1/activities?lead_id={}", id(&lead)))
        .await;
    let types: Vec<_> = log.iter().map(|a| a["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"nurture_enrolled"));
    assert_eq!(types.last(), Some(&"nurture_completed"));
    let ats: Vec<_> = log.iter().map(|a| a["at"].as_str().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "time order: {ats:?}");
    let deferred = app
        .all(&format!(
            "/v1/activities?lead_id={}&type=nurture_step_scheduled",
            id(&lead)
        ))
        .await;
    assert!(
        deferred
            .iter()
            .any(|a| a["details"]["reason"] == "frequency_cap"),
        "{deferred:?}"
    );
    let e = &app.enrollments_of(id(&lead)).await[0];
    let of_enrollment = app
        .all(&format!(
            "/v1/activities?enrollment_id={}&type=nurture_step_executed",
            id(e)
        ))
        .await;
    assert_eq!(of_enrollment.len(), 2);
    let a = &of_enrollment[0];
    for key in [
        "id",
        "type",
        "lead_id",
        "enrollment_id",
        "sequence_id",
        "step_order",
        "at",
        "details",
    ] {
        assert!(a.get(key).is_some(), "{key} missing from {a}");
    }
});
