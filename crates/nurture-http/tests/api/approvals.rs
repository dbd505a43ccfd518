//! `/v1/approvals` (HITL, SPEC section 4).

use serde_json::{Value, json};

use crate::helpers::{TestApp, id, spawn_app};

/// A sequence whose first email needs approval; returns a lead waiting for it.
async fn waiting_lead(app: &TestApp) -> Value {
    let lead = app.create_lead(json!({})).await;
    app.advance_hours(1.0).await;
    lead
}

async fn reviewed_sequence(app: &TestApp) {
    let approval_step = json!({"step_order": 1, "channel": "email", "delay_hours": 0, "template_id": "a",
                               "requires_human_approval": true});
    let follow_up =
        json!({"step_order": 2, "channel": "email", "delay_hours": 48, "template_id": "a"});
    app.auto_sequence(json!([approval_step, follow_up])).await;
}

api_test!(an_approval_pauses_and_approving_sends_the_edited_message, {
    let app = spawn_app().await;
    reviewed_sequence(&app).await;
    let lead = waiting_lead(&app).await;
    let e = &app.enrollments_of(id(&lead)).await[0];
    assert_eq!(
        (e["status"].clone(), e["paused_reason"].clone()),
        (json!("paused"), json!("awaiting_approval"))
    );

    let pending = app.all("/v1/approvals?status=pending").await;
    assert_eq!(pending.len(), 1);
    let a = &pending[0];
    assert_eq!(
        (
            a["lead_id"].clone(),
            a["step_order"].clone(),
            a["author"].clone()
        ),
        (lead["id"].clone(), json!(1), json!("template"))
    );
    assert_eq!(a["subject"], "Hello Ada");
    assert_eq!(
        app.get(&format!("/v1/approvals/{}", id(a))).await.ok(200),
        a
    );

    let drafted = app
        .put(
            &format!("/v1/approvals/{}", id(a)),
            json!({"body": "Drafted by an agent."}),
        )
        .await;
    let drafted = drafted.ok(200);
    assert_eq!(
        (drafted["author"].clone(), drafted["body"].clone()),
        (json!("agent"), json!("Drafted by an agent."))
    );

    let approved = app
        .post(
            &format!("/v1/approvals/{}/approve", id(a)),
            json!({"body": "Edited by a human."}),
        )
        .await;
    assert_eq!(approved.ok(200)["status"], "approved");
    let e = &app.enrollments_of(id(&lead)).await[0];
    assert_eq!(
        (e["status"].clone(), e["current_step_order"].clone()),
        (json!("active"), json!(2))
    );
    let sent = app
        .all(&format!("/v1/messages?lead_id={}", id(&lead)))
        .await;
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]["body"]
            .as_str()
            .unwrap()
            .contains("Edited by a human."),
        "{}",
        sent[0]
    );

    app.post_empty(&format!("/v1/approvals/{}/approve", id(a)))
        .await
        .problem(409);
    app.put(&format!("/v1/approvals/{}", id(a)), json!({"body": "late"}))
        .await
        .problem(409);
    assert!(app.all("/v1/approvals?status=pending").await.is_empty());
    assert_eq!(app.all("/v1/approvals?status=approved").await.len(), 1);
});

api_test!(rejecting_skips_the_step_or_exits, {
    let app = spawn_app().await;
    reviewed_sequence(&app).await;
    let skip = waiting_lead(&app).await;
    let quit = waiting_lead(&app).await;
    let pending = app.all("/v1/approvals?status=pending").await;
    let approval_of = |lead: &Value| {
        pending
            .iter()
            .find(|a| a["lead_id"] == lead["id"])
            .unwrap()
            .clone()
    };

    let r = app
        .post_empty(&format!("/v1/approvals/{}/reject", id(&approval_of(&skip))))
        .await;
    assert_eq!(r.ok(200)["status"], "rejected");
    let e = &app.enrollments_of(id(&skip)).await[0];
    assert_eq!(
        (e["status"].clone(), e["current_step_order"].clone()),
        (json!("active"), json!(2))
    );

    let r = app
        .post(
            &format!("/v1/approvals/{}/reject", id(&approval_of(&quit))),
            json!({"reason": "off tone", "exit": true}),
        )
        .await;
    assert_eq!(r.ok(200)["decision_reason"], "off tone");
    let e = &app.enrollments_of(id(&quit)).await[0];
    assert_eq!(
        (e["status"].clone(), e["exit_reason"].clone()),
        (json!("exited"), json!("approval_rejected"))
    );
    assert!(
        app.all(&format!("/v1/messages?lead_id={}", id(&quit)))
            .await
            .is_empty()
    );

    let bad = app
        .post(
            &format!("/v1/approvals/{}/reject", id(&approval_of(&quit))),
            json!({"exit": "yes"}),
        )
        .await;
    bad.problem(422);
    assert_eq!(bad.error_paths(), ["exit"]);
    app.post_empty("/v1/approvals/0190f0f0-0000-7000-8000-000000000000/reject")
        .await
        .problem(404);
});
