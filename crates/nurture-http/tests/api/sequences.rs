//! `/v1/sequences`: steps, rules and the lifecycle (SPEC section 4).

use serde_json::{Value, json};

use crate::helpers::{email_step, id, spawn_app};

api_test!(a_sequence_answers_its_steps_and_rules, {
    let app = spawn_app().await;
    let body = json!({
        "name": "Warm leads", "priority": 5,
        "entry_rules": {"segments_any": ["saas"], "when": {"field": "score", "op": "gte", "value": 50}},
        "exit_rules": {"on_reply": "any", "inactivity_days": 10},
        "steps": [
            {"channel": "email", "delay_hours": 0, "template_id": "a", "requires_human_approval": true},
            {"step_order": 2, "channel": "wait", "delay_hours": 24},
            {"step_order": 3, "channel": "task", "delay_hours": 24,
             "conditions": {"not": {"field": "status", "op": "eq", "value": "converted"}}},
        ]
    });
    let s = app.post("/v1/sequences", body).await.ok(201).clone();
    assert_eq!(s["name"], "Warm leads");
    assert_eq!(s["status"], "draft");
    assert_eq!(s["priority"], 5);
    assert_eq!(s["version"], 1);
    assert!(s["created_by"].is_string());
    assert_eq!(s["created_at"], "2026-01-05T09:00:00Z");
    assert_eq!(s["updated_at"], "2026-01-05T09:00:00Z");
    assert_eq!(
        s["entry_rules"],
        json!({"segments_any": ["saas"], "when": {"field": "score", "op": "gte", "value": 50}})
    );
    assert_eq!(
        s["exit_rules"],
        json!({"on_reply": "any", "inactivity_days": 10})
    );
    let steps = s["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(
        steps[0],
        json!({"step_order": 1, "channel": "email", "delay_hours": 0, "template_id": "a",
                                "requires_human_approval": true, "conditions": null})
    );
    assert_eq!(
        steps[2]["conditions"],
        json!({"not": {"field": "status", "op": "eq", "value": "converted"}})
    );
    assert_eq!(
        app.get(&format!("/v1/sequences/{}", id(&s))).await.ok(200),
        &s
    );

    // Without rules: manual only, default exit rules.
    let plain = app
        .post("/v1/sequences", json!({"name": "Plain"}))
        .await
        .ok(201)
        .clone();
    assert_eq!(plain["entry_rules"], Value::Null);
    assert_eq!(plain["exit_rules"], json!({"on_reply": "positive"}));
    assert_eq!(plain["priority"], 0);
    assert_eq!(plain["steps"], json!([]));
});

api_test!(the_lifecycle_refuses_illegal_transitions_with_409, {
    let app = spawn_app().await;
    let s = app
        .post(
            "/v1/sequences",
            json!({"name": "S", "steps": [email_step(1, 0)]}),
        )
        .await
        .ok(201)
        .clone();
    let path = format!("/v1/sequences/{}", id(&s));

    // The template is missing: activation fails validation, naming the step.
    let r = app.post_empty(&format!("{path}/activate")).await;
    r.problem(422);
    assert_eq!(r.error_paths(), ["steps[0].template_id"]);

    app.create_template("a").await;
    app.post_empty(&format!("{path}/resume")).await.problem(409);
    app.post_empty(&format!("{path}/pause")).await.problem(409);
    assert_eq!(
        app.post_empty(&format!("{path}/activate")).await.ok(200)["status"],
        "active"
    );
    let again = app.post_empty(&format!("{path}/activate")).await;
    again.problem(409);
    assert_eq!(again.json["conflicting"], json!({"status": "active"}));

    // Steps change only while draft or paused.
    app.put(&format!("{path}/steps"), json!([email_step(1, 0)]))
        .await
        .problem(409);
    assert_eq!(
        app.post_empty(&format!("{path}/pause")).await.ok(200)["status"],
        "paused"
    );
    let replaced = app
        .put(
            &format!("{path}/steps"),
            json!([email_step(1, 0), email_step(2, 48)]),
        )
        .await;
    assert_eq!(replaced.ok(200)["steps"].as_array().unwrap().len(), 2);
    let wrapped = app
        .put(
            &format!("{path}/steps"),
            json!({"steps": [email_step(1, 5)]}),
        )
        .await;
    assert_eq!(wrapped.ok(200)["steps"][0]["delay_hours"], 5);
    assert_eq!(
        app.post_empty(&format!("{path}/resume")).await.ok(200)["status"],
        "active"
    );
    assert_eq!(
        app.post_empty(&format!("{path}/archive")).await.ok(200)["status"],
        "archived"
    );
    app.post_empty(&format!("{path}/resume")).await.problem(409);
    app.post_empty(&format!("{path}/archive"))
        .await
        .problem(409);
    app.patch(&path, json!({"name": "N"})).await.problem(409);
});

api_test!(activation_checks_the_tenant_limits, {
    let app = spawn_app().await;
    let empty = app
        .post("/v1/sequences", json!({"name": "Empty"}))
        .await
        .ok(201)
        .clone();
    let r = app
        .post_empty(&format!("/v1/sequences/{}/activate", id(&empty)))
        .await;
    r.problem(422);
    assert_eq!(r.error_paths(), ["steps"]);

    app.create_template("a").await;
    let long = app
        .post(
            "/v1/sequences",
            json!({"name": "Long", "steps": [email_step(1, 0), email_step(2, 24 * 22)]}),
        )
        .await
        .ok(201)
        .clone();
    let r = app
        .post_empty(&format!("/v1/sequences/{}/activate", id(&long)))
        .await;
    r.problem(422);
    assert_eq!(r.error_paths(), ["steps"]);
});

api_test!(a_patch_changes_only_what_it_names, {
    let app = spawn_app().await;
    let s = app
        .post(
            "/v1/sequences",
            json!({"name": "S", "entry_rules": {}, "priority": 2}),
        )
        .await
        .ok(201)
        .clone();
    let path = format!("/v1/sequences/{}", id(&s));
    let p = app
        .patch(&path, json!({"name": "Renamed"}))
        .await
        .ok(200)
        .clone();
    assert_eq!(
        (
            p["name"].clone(),
            p["priority"].clone(),
            p["entry_rules"].clone()
        ),
        (json!("Renamed"), json!(2), json!({}))
    );
    assert_eq!(p["version"], 2);
    let p = app
        .patch(
            &path,
            json!({"entry_rules": null, "exit_rules": {"on_reply": "any"}}),
        )
        .await
        .ok(200)
        .clone();
    assert_eq!(p["entry_rules"], Value::Null);
    assert_eq!(p["exit_rules"], json!({"on_reply": "any"}));
    let bad = app
        .patch(
            &path,
            json!({"steps": [{"channel": "email", "template_id": "a", "step_order": 2}]}),
        )
        .await;
    bad.problem(422);
    assert_eq!(bad.error_paths(), ["steps[0].step_order"]);
    let bad = app
        .patch(&path, json!({"exit_rules": {"on_reply": "sometimes"}}))
        .await;
    bad.problem(422);
    assert_eq!(bad.error_paths(), ["exit_rules.on_reply"]);
    app.patch(
        "/v1/sequences/0190f0f0-0000-7000-8000-000000000000",
        json!({"name": "x"}),
    )
    .await
    .problem(404);
});

api_test!(stats_count_the_funnel, {
    let app = spawn_app().await;
    let seq = app
        .auto_sequence(json!([email_step(1, 0), email_step(2, 48)]))
        .await;
    let a = app.create_lead(json!({})).await;
    let b = app.create_lead(json!({})).await;
    app.create_lead(json!({})).await;
    app.advance_hours(1.0).await;
    app.post(
        &format!("/v1/leads/{}/events", id(&a)),
        json!({"type": "reply", "sentiment": "positive"}),
    )
    .await
    .ok(200);
    app.post(
        &format!("/v1/leads/{}/events", id(&b)),
        json!({"type": "converted"}),
    )
    .await
    .ok(200);
    let stats = app
        .get(&format!("/v1/sequences/{}/stats", id(&seq)))
        .await
        .ok(200)
        .clone();
    assert_eq!(
        stats,
        json!({"sequence_id": id(&seq), "enrolled": 3, "active": 1, "paused": 0, "completed": 0,
               "reached_step": [{"step_order": 1, "count": 3}], "replied": 1, "converted": 1,
               "exited_by_reason": {"converted": 1, "positive_reply": 1}})
    );
    app.get("/v1/sequences/0190f0f0-0000-7000-8000-000000000000/stats")
        .await
        .problem(404);
});
