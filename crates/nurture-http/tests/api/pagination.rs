//! `limit` and an opaque `cursor` (SPEC section 5, issue #3).

use serde_json::{Value, json};

use crate::helpers::spawn_app;

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

api_test!(pages_follow_the_cursor_to_the_end, {
    let app = spawn_app().await;
    for t in ["t1", "t2", "t3", "t4", "t5"] {
        app.create_template(t).await;
    }
    let first = app.get("/v1/templates?limit=2").await.ok(200).clone();
    assert_eq!(ids(&first), ["t1", "t2"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    assert!(!cursor.contains("t2"), "the cursor is opaque: {cursor}");
    let second = app
        .get(&format!("/v1/templates?limit=2&cursor={cursor}"))
        .await
        .ok(200)
        .clone();
    assert_eq!(ids(&second), ["t3", "t4"]);
    let cursor = second["next_cursor"].as_str().unwrap();
    let last = app
        .get(&format!("/v1/templates?limit=2&cursor={cursor}"))
        .await
        .ok(200)
        .clone();
    assert_eq!(ids(&last), ["t5"]);
    assert_eq!(last["next_cursor"], Value::Null);
});

api_test!(the_default_limit_is_50, {
    let app = spawn_app().await;
    for i in 0..51 {
        app.create_template(&format!("t{i:02}")).await;
    }
    let page = app.get("/v1/templates").await.ok(200).clone();
    assert_eq!(page["items"].as_array().unwrap().len(), 50);
    assert!(page["next_cursor"].is_string());
    let all = app.get("/v1/templates?limit=1000").await.ok(200).clone();
    assert_eq!(all["items"].as_array().unwrap().len(), 51);
    assert_eq!(all["next_cursor"], Value::Null);
});

api_test!(rows_added_while_paging_neither_repeat_nor_shift_pages, {
    let app = spawn_app().await;
    let seq = |n: usize| json!({"name": format!("s{n}")});
    let mut created = Vec::new();
    for n in 0..4 {
        created.push(
            app.create_sequence(seq(n), false).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let first = app.get("/v1/sequences?limit=2").await.ok(200).clone();
    assert_eq!(ids(&first), created[..2]);
    // Two more arrive while the client reads.
    for n in 4..6 {
        created.push(
            app.create_sequence(seq(n), false).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut seen = ids(&first);
    let mut cursor = first["next_cursor"].as_str().map(String::from);
    while let Some(c) = cursor {
        let page = app
            .get(&format!("/v1/sequences?limit=2&cursor={c}"))
            .await
            .ok(200)
            .clone();
        seen.extend(ids(&page));
        cursor = page["next_cursor"].as_str().map(String::from);
    }
    assert_eq!(seen, created, "every row once, in order");
});

api_test!(a_bad_cursor_or_limit_is_422_naming_it, {
    let app = spawn_app().await;
    for bad in ["not base64!", "@@@", ""] {
        let r = app.get(&format!("/v1/enrollments?cursor={bad}")).await;
        r.problem(422);
        assert_eq!(r.error_paths(), ["cursor"], "{bad}");
    }
    // Well-formed base64 of a key no list handed out.
    let r = app.get("/v1/enrollments?cursor=bm9wZQ").await;
    r.problem(422);
    assert_eq!(r.error_paths(), ["cursor"]);
    for bad in ["0", "1001", "-1", "ten"] {
        let r = app.get(&format!("/v1/sequences?limit={bad}")).await;
        r.problem(422);
        assert_eq!(r.error_paths(), ["limit"], "{bad}");
    }
    app.get("/v1/sequences?limit=1000").await.ok(200);
    app.get("/v1/sequences?limit=1").await.ok(200);
});

api_test!(a_bad_filter_is_422_naming_the_parameter, {
    let app = spawn_app().await;
    for (query, param) in [
        ("/v1/enrollments?status=running", "status"),
        ("/v1/enrollments?lead_id=42", "lead_id"),
        ("/v1/enrollments?sequence_id=x", "sequence_id"),
        ("/v1/messages?status=lost", "status"),
        ("/v1/activities?type=nurture_nothing", "type"),
        ("/v1/activities?enrollment_id=x", "enrollment_id"),
        ("/v1/approvals?status=maybe", "status"),
        ("/v1/tasks?status=later", "status"),
        ("/v1/tasks?colour=red", "colour"),
    ] {
        let r = app.get(query).await;
        r.problem(422);
        assert_eq!(r.error_paths(), [param], "{query}");
    }
});
