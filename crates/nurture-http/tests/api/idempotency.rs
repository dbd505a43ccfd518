//! `Idempotency-Key` on POST (SPEC section 5, issue #3).

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Resp, TestApp, spawn_app};

async fn post_with_key(app: &TestApp, path: &str, key: &str, body: Value) -> Resp {
    app.send(
        app.req(Method::POST, path)
            .header("idempotency-key", key)
            .json(&body),
    )
    .await
}

api_test!(the_same_request_replays_the_saved_answer_exactly, {
    let app = spawn_app().await;
    let body = json!({"email": "ada@example.com", "first_name": "Ada"});
    let first = post_with_key(&app, "/v1/leads", "key-1", body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = post_with_key(&app, "/v1/leads", "key-1", body).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.text, first.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("content-type"), Some("application/json"));
});

api_test!(an_error_answer_is_replayed_too, {
    let app = spawn_app().await;
    app.create_template("a").await;
    let body = json!({"id": "a", "name": "a", "subject": "s", "body": "b"});
    let first = post_with_key(&app, "/v1/templates", "dup", body.clone()).await;
    first.problem(409);
    let again = post_with_key(&app, "/v1/templates", "dup", body).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.text, first.text);
    assert_eq!(
        again.header("content-type"),
        Some("application/problem+json")
    );
});

api_test!(the_same_key_with_a_different_body_is_422, {
    let app = spawn_app().await;
    post_with_key(
        &app,
        "/v1/leads",
        "key-1",
        json!({"email": "ada@example.com"}),
    )
    .await
    .ok(201);
    let r = post_with_key(
        &app,
        "/v1/leads",
        "key-1",
        json!({"email": "bob@example.com"}),
    )
    .await;
    r.problem(422);
    assert_eq!(r.error_paths(), ["Idempotency-Key"]);
    // On another path it is a different request too.
    post_with_key(
        &app,
        "/v1/templates",
        "key-1",
        json!({"email": "ada@example.com"}),
    )
    .await
    .problem(422);
});

api_test!(different_keys_are_independent, {
    let app = spawn_app().await;
    let body = json!({"email": "ada@example.com"});
    let a = post_with_key(&app, "/v1/leads", "key-a", body.clone()).await;
    let b = post_with_key(&app, "/v1/leads", "key-b", body).await;
    assert_eq!((a.status, b.status), (201, 201));
    assert_ne!(a.json["id"], b.json["id"]);
    assert_eq!(b.header("idempotent-replayed"), None);
});

api_test!(keys_belong_to_their_tenant, {
    let app = spawn_app().await;
    let other = app.other_tenant().await;
    let body = json!({"email": "ada@example.com"});
    let mine = post_with_key(&app, "/v1/leads", "shared", body.clone()).await;
    let theirs = post_with_key(&other, "/v1/leads", "shared", body).await;
    assert_eq!((mine.status, theirs.status), (201, 201));
    assert_ne!(mine.json["id"], theirs.json["id"]);
    assert_eq!(theirs.header("idempotent-replayed"), None);
});

api_test!(concurrent_retries_run_once, {
    let app = spawn_app().await;
    let body = json!({"email": "ada@example.com"});
    let (a, b) = tokio::join!(
        post_with_key(&app, "/v1/leads", "race", body.clone()),
        post_with_key(&app, "/v1/leads", "race", body.clone())
    );
    assert_eq!((a.status, b.status), (201, 201));
    assert_eq!(a.json["id"], b.json["id"]);
    let replayed = [
        a.header("idempotent-replayed"),
        b.header("idempotent-replayed"),
    ];
    assert_eq!(replayed.iter().filter(|h| **h == Some("true")).count(), 1);
});

api_test!(a_bad_key_is_422, {
    let app = spawn_app().await;
    let long = "k".repeat(256);
    post_with_key(
        &app,
        "/v1/leads",
        &long,
        json!({"email": "ada@example.com"}),
    )
    .await
    .problem(422);
});

api_test!(posts_without_a_key_are_not_deduplicated, {
    let app = spawn_app().await;
    let body = json!({"email": "ada@example.com"});
    let a = app.post("/v1/leads", body.clone()).await;
    let b = app.post("/v1/leads", body).await;
    assert_eq!((a.status, b.status), (201, 201));
    assert_ne!(a.json["id"], b.json["id"]);
});

/// The key's hash as the server computes it: method, path and body.
fn request_hash(path: &str, body: &Value) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"POST\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(serde_json::to_vec(body).unwrap());
    h.finalize().to_vec()
}

api_test!(
    a_retry_while_another_process_runs_the_request_is_409_until_its_lease_ends,
    {
        let app = spawn_app().await;
        let p = app
            .engine
            .authenticate(&app.api_key)
            .await
            .unwrap()
            .unwrap();
        let body = json!({"email": "ada@example.com"});
        // Another `nurture serve` on the same database has begun this request and not finished.
        let reserved = app
            .engine
            .reserve_idempotency_key(p, "key-1", &request_hash("/v1/leads", &body))
            .await
            .unwrap();
        assert_eq!(reserved, nurture_core::store::KeyState::Reserved);

        let r = post_with_key(&app, "/v1/leads", "key-1", body.clone()).await;
        let problem = &r.problem(409).json;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("still running"),
            "{problem}"
        );
        let other = post_with_key(
            &app,
            "/v1/leads",
            "key-1",
            json!({"email": "bo@example.com"}),
        )
        .await;
        other.problem(422);
        assert_eq!(app.count("leads").await, 0, "nothing ran");

        // That process died: once its lease is over, a retry takes the key and runs the request.
        let lease = nurture_core::engine::IDEMPOTENCY_LEASE.as_secs();
        app.post("/v1/clock/advance", json!({"hours": 1}))
            .await
            .ok(200);
        assert!(lease < 3600);
        let r = post_with_key(&app, "/v1/leads", "key-1", body.clone()).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.header("idempotent-replayed"), None);
        let again = post_with_key(&app, "/v1/leads", "key-1", body).await;
        assert_eq!(again.status, 201);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.text, r.text);
    }
);
