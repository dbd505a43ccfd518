//! Every error class answers RFC 9457 problem+json with the right status (issue #3).

use nurture_http::HttpConfig;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Options, id, spawn_app, spawn_app_with};

api_test!(malformed_json_is_400, {
    let app = spawn_app().await;
    let r = app
        .raw(
            Method::POST,
            "/v1/sequences",
            "{not json",
            Some("application/json"),
        )
        .await;
    r.problem(400);
    assert_eq!(r.json["type"], "about:blank");
});

api_test!(a_wrong_type_is_422_at_its_path, {
    let app = spawn_app().await;
    let body = json!({"name": "x", "steps": [
        {"channel": "wait", "delay_hours": 1},
        {"channel": "email", "delay_hours": "soon", "template_id": "a"}
    ]});
    let r = app.post("/v1/sequences", body).await;
    r.problem(422);
    assert_eq!(r.error_paths(), ["steps[1].delay_hours"]);
    assert_eq!(r.json["type"], "urn:nurture:problem:validation");
});

api_test!(values_the_domain_refuses_are_422_with_every_path, {
    let app = spawn_app().await;
    let body = json!({"name": "x", "steps": [
        {"channel": "email", "delay_hours": -1, "template_id": "no spaces"},
    ], "entry_rules": {"when": {"all": [{"field": "score", "op": "gt", "value": 1},
                                        {"field": "score", "op": "greater", "value": 3}]}}});
    let r = app.post("/v1/sequences", body).await;
    r.problem(422);
    let paths = r.error_paths();
    for expected in [
        "steps[0].delay_hours",
        "steps[0].template_id",
        "entry_rules.when.all[1].op",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} missing from {paths:?}"
        );
    }
});

api_test!(a_missing_field_is_422_naming_it, {
    let app = spawn_app().await;
    let r = app.post("/v1/leads", json!({"first_name": "Ada"})).await;
    r.problem(422);
    assert_eq!(r.error_paths(), ["email"]);
});

api_test!(an_unknown_field_is_422, {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/leads",
            json!({"email": "a@example.com", "nickname": "Ada"}),
        )
        .await;
    r.problem(422);
    assert_eq!(r.error_paths(), ["nickname"]);
    let r = app
        .post(
            "/v1/sequences",
            json!({"name": "x", "exit_rules": {"on_reply": "any", "extra": 1}}),
        )
        .await;
    r.problem(422);
    assert_eq!(r.error_paths(), ["exit_rules.extra"]);
});

api_test!(a_body_over_the_limit_is_413, {
    let app = spawn_app_with(Options {
        config: HttpConfig {
            body_limit: 1024,
            ..HttpConfig::default()
        },
        ..Options::default()
    })
    .await;
    let big = format!(
        "{{\"email\": \"a@example.com\", \"company\": \"{}\"}}",
        "x".repeat(2048)
    );
    app.raw(
        Method::POST,
        "/v1/leads",
        big.clone(),
        Some("application/json"),
    )
    .await
    .problem(413);
    // Through the Idempotency-Key path too, which reads the body first.
    let req = app
        .req(Method::POST, "/v1/leads")
        .header("idempotency-key", "k")
        .header("content-type", "application/json");
    app.send(req.body(big)).await.problem(413);
    // Under the limit is fine.
    app.post("/v1/leads", json!({"email": "a@example.com"}))
        .await
        .ok(201);
});

api_test!(the_default_limit_is_one_mebibyte, {
    let app = spawn_app().await;
    let big = format!(
        "{{\"email\": \"a@example.com\", \"company\": \"{}\"}}",
        "x".repeat(1024 * 1024)
    );
    app.raw(Method::POST, "/v1/leads", big, Some("application/json"))
        .await
        .problem(413);
});

api_test!(an_unknown_route_is_404, {
    let app = spawn_app().await;
    app.get("/v1/nothing-here").await.problem(404);
    // Even without a key: the route does not exist, so there is nothing to authorize.
    let r = app.send(app.client.get(format!("{}/nope", app.base))).await;
    r.problem(404);
});

api_test!(a_wrong_method_is_405_with_allow, {
    let app = spawn_app().await;
    let r = app.send(app.req(Method::DELETE, "/v1/sequences")).await;
    r.problem(405);
    let allow = r.header("allow").unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
});

api_test!(a_missing_or_wrong_key_is_401, {
    let app = spawn_app().await;
    let none = app
        .send(app.client.get(format!("{}/v1/sequences", app.base)))
        .await;
    none.problem(401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = app
        .send(
            app.client
                .get(format!("{}/v1/sequences", app.base))
                .bearer_auth("nk_nope_nope"),
        )
        .await;
    wrong.problem(401);
    let garbage = app
        .send(
            app.client
                .get(format!("{}/v1/sequences", app.base))
                .bearer_auth("garbage"),
        )
        .await;
    garbage.problem(401);
    let scheme = app
        .send(
            app.client
                .get(format!("{}/v1/sequences", app.base))
                .basic_auth("a", Some("b")),
        )
        .await;
    scheme.problem(401);
});

api_test!(another_tenants_objects_are_404_and_absent_from_lists, {
    let app = spawn_app().await;
    let seq = app
        .auto_sequence(json!([crate::helpers::email_step(1, 0)]))
        .await;
    let lead = app.create_lead(json!({})).await;
    let enrollment = &lead["enrollments"][0];
    let other = app.other_tenant().await;
    other
        .get(&format!("/v1/leads/{}", id(&lead)))
        .await
        .problem(404);
    other
        .get(&format!("/v1/sequences/{}", id(&seq)))
        .await
        .problem(404);
    other
        .get(&format!("/v1/enrollments/{}", id(enrollment)))
        .await
        .problem(404);
    other.get("/v1/templates/a").await.problem(404);
    other
        .post_empty(&format!("/v1/sequences/{}/archive", id(&seq)))
        .await
        .problem(404);
    other
        .patch(
            &format!("/v1/leads/{}", id(&lead)),
            json!({"first_name": "Eve"}),
        )
        .await
        .problem(404);
    other
        .post(
            "/v1/enrollments",
            json!({"lead_id": id(&lead), "sequence_id": id(&seq)}),
        )
        .await
        .problem(404);
    assert!(other.all("/v1/sequences").await.is_empty());
    assert!(other.all("/v1/templates").await.is_empty());
    assert!(other.all("/v1/enrollments").await.is_empty());
    assert!(
        other
            .all(&format!("/v1/activities?lead_id={}", id(&lead)))
            .await
            .is_empty()
    );
    // And the owner still sees them.
    app.get(&format!("/v1/leads/{}", id(&lead))).await.ok(200);
});

api_test!(a_body_that_is_not_declared_json_is_415, {
    let app = spawn_app().await;
    app.raw(
        Method::POST,
        "/v1/leads",
        r#"{"email": "a@example.com"}"#,
        Some("text/plain"),
    )
    .await
    .problem(415);
    app.raw(
        Method::POST,
        "/v1/leads",
        r#"{"email": "a@example.com"}"#,
        None,
    )
    .await
    .problem(415);
    app.raw(Method::POST, "/v1/leads", "", None)
        .await
        .problem(415);
    // A JSON type with parameters, or a +json type, is JSON.
    app.raw(
        Method::POST,
        "/v1/leads",
        r#"{"email": "b@example.com"}"#,
        Some("application/json; charset=utf-8"),
    )
    .await
    .ok(201);
});

api_test!(a_path_id_that_is_not_a_uuid_is_404, {
    let app = spawn_app().await;
    app.get("/v1/leads/not-a-uuid").await.problem(404);
    app.post_empty("/v1/sequences/123/activate")
        .await
        .problem(404);
});

api_test!(
    an_unexpected_error_is_a_generic_500_carrying_the_request_id,
    {
        let app = spawn_app().await;
        app.lose_database().await;
        let r = app.get("/v1/sequences").await;
        r.problem(500);
        assert!(
            !r.text.contains("sqlite") && !r.text.contains("pool"),
            "internal detail leaked: {}",
            r.text
        );
        assert!(r.header("x-request-id").is_some_and(|id| !id.is_empty()));
        app.get("/readyz").await.problem(503);
    }
);

api_test!(every_answer_carries_a_request_id, {
    let app = spawn_app().await;
    for r in [
        app.get("/healthz").await,
        app.get("/v1/sequences").await,
        app.get("/nope").await,
    ] {
        assert!(
            r.header("x-request-id").is_some_and(|v| v.len() >= 32),
            "{r:?}"
        );
    }
    let given = app
        .send(
            app.req(Method::GET, "/v1/sequences")
                .header("x-request-id", "trace-me-42"),
        )
        .await;
    assert_eq!(given.header("x-request-id"), Some("trace-me-42"));
});
