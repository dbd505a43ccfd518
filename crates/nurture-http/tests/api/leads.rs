//! `/v1/leads` and their events.

use serde_json::{Value, json};

use crate::helpers::{email_step, id, spawn_app};

api_test!(a_new_lead_is_201_with_the_enrollments_it_caused, {
    let app = spawn_app().await;
    let seq = app.auto_sequence(json!([email_step(1, 0)])).await;
    let lead = app
        .create_lead(
            json!({"company": "Acme", "timezone": "Europe/Paris", "segments": ["saas"],
                                      "attributes": {"plan": {"tier": "pro"}}}),
        )
        .await;
    for key in [
        "id",
        "email",
        "first_name",
        "last_name",
        "company",
        "timezone",
        "status",
        "score",
        "score_band",
        "segments",
        "attributes",
        "owner_id",
        "do_not_contact",
        "unsubscribed",
        "last_reply_at",
    ] {
        assert!(lead.get(key).is_some(), "{key} missing from {lead}");
    }
    assert_eq!(lead["company"], "Acme");
    assert_eq!(lead["timezone"], "Europe/Paris");
    assert_eq!(lead["attributes"], json!({"plan": {"tier": "pro"}}));
    assert_eq!(lead["last_reply_at"], Value::Null);
    let enrollments = lead["enrollments"].as_array().unwrap();
    assert_eq!(enrollments.len(), 1);
    let e = &enrollments[0];
    assert_eq!(e["sequence_id"], seq["id"]);
    assert_eq!(
        (
            e["status"].clone(),
            e["source"].clone(),
            e["current_step_order"].clone()
        ),
        (json!("active"), json!("auto"), json!(1))
    );
    assert_eq!(e["enrolled_on"], "2026-01-05T09:00:00Z");
    assert_eq!(e["next_step_on"], "2026-01-05T09:00:00Z");
    assert_eq!(
        app.get(&format!("/v1/leads/{}", id(&lead))).await.ok(200)["email"],
        lead["email"]
    );
});

api_test!(posting_an_existing_id_upserts_with_200, {
    let app = spawn_app().await;
    let lead = app.create_lead(json!({"company": "Acme"})).await;
    let again = app
        .post(
            "/v1/leads",
            json!({"id": id(&lead), "email": "new@example.com", "score": 7}),
        )
        .await;
    let again = again.ok(200);
    assert_eq!(again["id"], lead["id"]);
    assert_eq!(again["email"], "new@example.com");
    assert_eq!(
        again["company"],
        Value::Null,
        "an upsert replaces the fields"
    );
    assert_eq!(again["status"], "new");
    let chosen = "0190f0f0-0000-7000-8000-00000000abcd";
    let created = app
        .post("/v1/leads", json!({"id": chosen, "email": "c@example.com"}))
        .await;
    assert_eq!(created.ok(201)["id"], chosen);
});

api_test!(a_patch_changes_what_it_names_and_takes_effect_at_once, {
    let app = spawn_app().await;
    app.auto_sequence(json!([email_step(1, 0), email_step(2, 48)]))
        .await;
    let lead = app.create_lead(json!({"last_name": "Lovelace"})).await;
    let path = format!("/v1/leads/{}", id(&lead));
    let p = app
        .patch(&path, json!({"last_name": null, "score": 70}))
        .await
        .ok(200)
        .clone();
    assert_eq!(
        (
            p["last_name"].clone(),
            p["score"].clone(),
            p["first_name"].clone()
        ),
        (Value::Null, json!(70), json!("Ada"))
    );
    assert_eq!(p["enrollments"], json!([]));
    let dnc = app
        .patch(&path, json!({"do_not_contact": true}))
        .await
        .ok(200)
        .clone();
    assert_eq!(dnc["do_not_contact"], true);
    assert_eq!(dnc["enrollments"][0]["status"], "exited");
    assert_eq!(dnc["enrollments"][0]["exit_reason"], "do_not_contact");

    let bad = app
        .patch(
            &path,
            json!({"email": null, "status": "hot", "timezone": "Mars/Olympus"}),
        )
        .await;
    bad.problem(422);
    assert_eq!(
        bad.error_paths(),
        ["status"],
        "serde stops at the first shape error"
    );
    let bad = app
        .patch(&path, json!({"email": null, "timezone": "Mars/Olympus"}))
        .await;
    bad.problem(422);
    assert_eq!(bad.error_paths(), ["email", "timezone"]);
    let bad = app.patch(&path, json!({"email": "not-an-address"})).await;
    bad.problem(422);
    assert_eq!(bad.error_paths(), ["email"]);
    app.patch(
        "/v1/leads/0190f0f0-0000-7000-8000-000000000000",
        json!({"score": 1}),
    )
    .await
    .problem(404);
});

api_test!(a_positive_reply_exits_at_once, {
    let app = spawn_app().await;
    app.auto_sequence(json!([email_step(1, 0), email_step(2, 72)]))
        .await;
    let lead = app.create_lead(json!({})).await;
    app.advance_hours(1.0).await;
    let r = app
        .post(
            &format!("/v1/leads/{}/events", id(&lead)),
            json!({"type": "reply", "sentiment": "positive"}),
        )
        .await;
    let r = r.ok(200);
    assert_eq!(r["last_reply_at"], "2026-01-05T10:00:00Z");
    assert_eq!(r["last_reply_sentiment"], "positive");
    assert_eq!(r["enrollments"][0]["exit_reason"], "positive_reply");
    let e = &app.enrollments_of(id(&lead)).await[0];
    assert_eq!(
        (e["status"].clone(), e["exit_reason"].clone()),
        (json!("exited"), json!("positive_reply"))
    );
});

api_test!(events_are_checked_for_what_their_type_needs, {
    let app = spawn_app().await;
    let lead = app.create_lead(json!({})).await;
    let path = format!("/v1/leads/{}/events", id(&lead));
    for (body, paths) in [
        (json!({"type": "reply"}), vec!["sentiment"]),
        (json!({"type": "bounced"}), vec!["kind"]),
        (
            json!({"type": "converted", "sentiment": "positive"}),
            vec!["sentiment"],
        ),
        (
            json!({"type": "reply", "sentiment": "positive", "until": "2026-02-01T00:00:00Z"}),
            vec!["until"],
        ),
        (json!({"type": "shouted"}), vec!["type"]),
        (json!({"type": "bounced", "kind": "medium"}), vec!["kind"]),
        (
            json!({"type": "email_opened", "at": "yesterday"}),
            vec!["at"],
        ),
        (
            json!({"type": "email_opened", "at": "2030-01-01T00:00:00Z"}),
            vec!["at"],
        ),
    ] {
        let r = app.post(&path, body.clone()).await;
        r.problem(422);
        assert_eq!(r.error_paths(), paths, "{body}");
    }
    let ooo =
        json!({"type": "reply", "sentiment": "out_of_office", "until": "2026-02-01T00:00:00Z"});
    assert_eq!(
        app.post(&path, ooo).await.ok(200)["last_reply_at"],
        Value::Null,
        "an out-of-office is not a reply"
    );
    let hard = app
        .post(
            &path,
            json!({"type": "bounced", "kind": "hard", "at": "2026-01-05T08:00:00Z"}),
        )
        .await;
    assert_eq!(hard.ok(200)["bounced"], true);
    app.post(
        &path,
        json!({"type": "outbound_message", "subject": "Hi from the CRM"}),
    )
    .await
    .ok(200);
    let sent = app
        .all(&format!("/v1/messages?lead_id={}", id(&lead)))
        .await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["subject"], "Hi from the CRM");
    assert_eq!(sent[0]["enrollment_id"], Value::Null);
    app.post(
        "/v1/leads/0190f0f0-0000-7000-8000-000000000000/events",
        json!({"type": "converted"}),
    )
    .await
    .problem(404);
});
