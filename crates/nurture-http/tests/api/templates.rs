//! `/v1/templates`.

use serde_json::json;

use crate::helpers::spawn_app;

api_test!(templates_are_created_read_replaced_and_listed, {
    let app = spawn_app().await;
    let body = json!({"id": "intro", "name": "Intro", "subject": "Hi {{ first_name }}",
                      "body": "Hello {{ first_name }}", "html_body": "<p>Hello</p>", "pre_approved": true});
    let t = app.post("/v1/templates", body).await.ok(201).clone();
    assert_eq!(t["id"], "intro");
    assert_eq!(t["name"], "Intro");
    assert_eq!(t["subject"], "Hi {{ first_name }}");
    assert_eq!(t["body"], "Hello {{ first_name }}");
    assert_eq!(t["html_body"], "<p>Hello</p>");
    assert_eq!(t["pre_approved"], true);
    assert_eq!(t["created_at"], "2026-01-05T09:00:00Z");

    assert_eq!(app.get("/v1/templates/intro").await.ok(200), &t);

    let replaced = app
        .put(
            "/v1/templates/intro",
            json!({"name": "Intro 2", "subject": "S", "body": "B"}),
        )
        .await;
    let replaced = replaced.ok(200);
    assert_eq!(replaced["name"], "Intro 2");
    assert_eq!(replaced["html_body"], serde_json::Value::Null);
    assert_eq!(replaced["pre_approved"], false);

    let created = app
        .put(
            "/v1/templates/other",
            json!({"id": "other", "name": "O", "subject": "S", "body": "B"}),
        )
        .await;
    assert_eq!(created.ok(201)["id"], "other");

    let listed: Vec<_> = app
        .all("/v1/templates")
        .await
        .iter()
        .map(|t| t["id"].clone())
        .collect();
    assert_eq!(listed, [json!("intro"), json!("other")]);
});

api_test!(a_taken_id_is_409_and_bad_templates_422, {
    let app = spawn_app().await;
    app.create_template("a").await;
    let dup = app
        .post(
            "/v1/templates",
            json!({"id": "a", "name": "a", "subject": "s", "body": "b"}),
        )
        .await;
    dup.problem(409);
    assert_eq!(dup.json["conflicting"], json!({"template_id": "a"}));
    assert_eq!(dup.json["type"], "urn:nurture:problem:conflict");

    let bad = app
        .post(
            "/v1/templates",
            json!({"id": "no spaces", "name": "", "subject": " ", "body": "b"}),
        )
        .await;
    bad.problem(422);
    assert_eq!(bad.error_paths(), ["id"]);
    let bad = app
        .post(
            "/v1/templates",
            json!({"id": "ok", "name": "", "subject": " ", "body": "b"}),
        )
        .await;
    bad.problem(422);
    let paths = bad.error_paths();
    assert!(
        paths.contains(&"name".to_string()) && paths.contains(&"subject".to_string()),
        "{paths:?}"
    );

    app.put(
        "/v1/templates/x",
        json!({"id": "y", "name": "n", "subject": "s", "body": "b"}),
    )
    .await
    .problem(422);
    app.put(
        "/v1/templates/bad%20id",
        json!({"name": "n", "subject": "s", "body": "b"}),
    )
    .await
    .problem(422);
    app.get("/v1/templates/missing").await.problem(404);
});
