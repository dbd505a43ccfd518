//! `/v1/enrollments`: manual enrollment, reads and changes by hand.

use serde_json::{Value, json};

use crate::helpers::{email_step, id, spawn_app};

api_test!(manual_enrollment_and_changes_by_hand, {
    let app = spawn_app().await;
    app.create_template("a").await;
    let seq = app
        .create_sequence(
            json!({"name": "Manual", "steps": [email_step(1, 24)]}),
            true,
        )
        .await;
    let lead = app.create_lead(json!({})).await;
    assert_eq!(
        lead["enrollments"],
        json!([]),
        "a sequence without entry rules enrolls by hand only"
    );

    let e = app
        .post(
            "/v1/enrollments",
            json!({"lead_id": id(&lead), "sequence_id": id(&seq)}),
        )
        .await
        .ok(201)
        .clone();
    assert_eq!(
        (e["status"].clone(), e["source"].clone()),
        (json!("active"), json!("manual"))
    );
    assert_eq!(e["next_step_on"], "2026-01-06T09:00:00Z");
    for key in [
        "id",
        "lead_id",
        "sequence_id",
        "current_step_order",
        "status",
        "source",
        "enrolled_on",
        "next_step_on",
        "paused_reason",
        "exit_reason",
    ] {
        assert!(e.get(key).is_some(), "{key} missing from {e}");
    }

    let dup = app
        .post(
            "/v1/enrollments",
            json!({"lead_id": id(&lead), "sequence_id": id(&seq)}),
        )
        .await;
    dup.problem(409);
    assert!(
        dup.json["conflicting"].to_string().contains(id(&e)),
        "{}",
        dup.text
    );

    let path = format!("/v1/enrollments/{}", id(&e));
    let paused = app
        .post_empty(&format!("{path}/pause"))
        .await
        .ok(200)
        .clone();
    assert_eq!(
        (paused["status"].clone(), paused["paused_reason"].clone()),
        (json!("paused"), json!("manual"))
    );
    app.post_empty(&format!("{path}/pause")).await.problem(409);
    let resumed = app
        .post_empty(&format!("{path}/resume"))
        .await
        .ok(200)
        .clone();
    assert_eq!(
        (resumed["status"].clone(), resumed["paused_reason"].clone()),
        (json!("active"), Value::Null)
    );
    let exited = app
        .post(&format!("{path}/exit"), json!({"reason": "asked by sales"}))
        .await
        .ok(200)
        .clone();
    assert_eq!(
        (exited["status"].clone(), exited["exit_reason"].clone()),
        (json!("exited"), json!("asked by sales"))
    );
    app.post_empty(&format!("{path}/exit")).await.problem(409);
    assert_eq!(app.get(&path).await.ok(200)["status"], "exited");

    // Filters.
    assert_eq!(
        app.all(&format!(
            "/v1/enrollments?sequence_id={}&status=exited",
            id(&seq)
        ))
        .await
        .len(),
        1
    );
    assert_eq!(
        app.all(&format!(
            "/v1/enrollments?sequence_id={}&status=active",
            id(&seq)
        ))
        .await
        .len(),
        0
    );
    assert_eq!(
        app.all(&format!("/v1/enrollments?lead_id={}", id(&lead)))
            .await
            .len(),
        1
    );
});

api_test!(exit_without_a_body_is_manual, {
    let app = spawn_app().await;
    app.auto_sequence(json!([email_step(1, 24)])).await;
    let lead = app.create_lead(json!({})).await;
    let e = &lead["enrollments"][0];
    let exited = app
        .post_empty(&format!("/v1/enrollments/{}/exit", id(e)))
        .await;
    assert_eq!(exited.ok(200)["exit_reason"], "manual");
});

api_test!(safety_checks_refuse_manual_enrollment, {
    let app = spawn_app().await;
    app.create_template("a").await;
    let active = app
        .create_sequence(json!({"name": "A", "steps": [email_step(1, 0)]}), true)
        .await;
    let draft = app
        .create_sequence(json!({"name": "D", "steps": [email_step(1, 0)]}), false)
        .await;
    let dnc = app.create_lead(json!({"do_not_contact": true})).await;
    let ok = app.create_lead(json!({})).await;
    app.post(
        "/v1/enrollments",
        json!({"lead_id": id(&dnc), "sequence_id": id(&active)}),
    )
    .await
    .problem(422);
    app.post(
        "/v1/enrollments",
        json!({"lead_id": id(&ok), "sequence_id": id(&draft)}),
    )
    .await
    .problem(422);
    app.post(
        "/v1/enrollments",
        json!({"lead_id": id(&ok), "sequence_id": "0190f0f0-0000-7000-8000-000000000000"}),
    )
    .await
    .problem(404);
    let bad = app
        .post(
            "/v1/enrollments",
            json!({"lead_id": "x", "sequence_id": id(&active)}),
        )
        .await;
    bad.problem(422);
    assert_eq!(bad.error_paths(), ["lead_id"]);
});
