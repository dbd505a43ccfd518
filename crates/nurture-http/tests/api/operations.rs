//! `/healthz`, `/readyz`, `/metrics` and `/openapi.json`.

use std::collections::BTreeSet;

use crate::helpers::spawn_app;

api_test!(health_and_readiness, {
    let app = spawn_app().await;
    let no_key = app.client.get(format!("{}/healthz", app.base));
    assert_eq!(app.send(no_key).await.ok(200)["status"], "ok");
    let no_key = app.client.get(format!("{}/readyz", app.base));
    assert_eq!(app.send(no_key).await.ok(200)["status"], "ready");
});

api_test!(metrics_count_requests_by_route_and_status, {
    let app = spawn_app().await;
    app.get("/v1/sequences").await.ok(200);
    app.get("/v1/leads/0190f0f0-0000-7000-8000-000000000000")
        .await
        .problem(404);
    let r = app.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let has = |route: &str, status: &str| {
        r.text.lines().any(|l| {
            l.starts_with("http_requests_total{")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(has("/v1/sequences", "200"), "{}", r.text);
    assert!(has("/v1/leads/{id}", "404"), "{}", r.text);
    assert!(
        r.text.contains("http_request_duration_seconds_bucket{"),
        "{}",
        r.text
    );
});

/// Every route served, as `METHOD path`: the document must list exactly these.
const SERVED: &[&str] = &[
    "POST /v1/leads",
    "GET /v1/leads/{id}",
    "PATCH /v1/leads/{id}",
    "POST /v1/leads/{id}/events",
    "POST /v1/templates",
    "GET /v1/templates",
    "GET /v1/templates/{id}",
    "PUT /v1/templates/{id}",
    "POST /v1/sequences",
    "GET /v1/sequences",
    "GET /v1/sequences/{id}",
    "PATCH /v1/sequences/{id}",
    "PUT /v1/sequences/{id}/steps",
    "POST /v1/sequences/{id}/activate",
    "POST /v1/sequences/{id}/pause",
    "POST /v1/sequences/{id}/resume",
    "POST /v1/sequences/{id}/archive",
    "GET /v1/sequences/{id}/stats",
    "POST /v1/enrollments",
    "GET /v1/enrollments",
    "GET /v1/enrollments/{id}",
    "POST /v1/enrollments/{id}/pause",
    "POST /v1/enrollments/{id}/resume",
    "POST /v1/enrollments/{id}/exit",
    "GET /v1/approvals",
    "GET /v1/approvals/{id}",
    "PUT /v1/approvals/{id}",
    "POST /v1/approvals/{id}/approve",
    "POST /v1/approvals/{id}/reject",
    "GET /v1/tasks",
    "POST /v1/tasks/{id}/complete",
    "GET /v1/messages",
    "GET /v1/activities",
    "GET /v1/settings",
    "PATCH /v1/settings",
    "GET /v1/clock",
    "POST /v1/clock/advance",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
];

api_test!(the_openapi_document_lists_every_route_served, {
    let app = spawn_app().await;
    let doc = app.get("/openapi.json").await.ok(200).clone();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "patch", "delete"] {
            if let Some(op) = item.get(method) {
                documented.insert(format!("{} {path}", method.to_uppercase()));
                assert!(
                    op["responses"].get("500").is_some(),
                    "{method} {path} documents no 500"
                );
                if path.starts_with("/v1/") {
                    assert!(
                        op["responses"].get("401").is_some(),
                        "{method} {path} documents no 401"
                    );
                    assert!(
                        op.get("security").is_some(),
                        "{method} {path} has no security"
                    );
                }
            }
        }
    }
    let served: BTreeSet<String> = SERVED.iter().map(|s| s.to_string()).collect();
    assert_eq!(documented, served);
    // And each documented route answers something other than "no such route".
    for route in SERVED {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path.replace("{id}", "0190f0f0-0000-7000-8000-000000000000");
        let r = app.send(app.req(method.parse().unwrap(), &path)).await;
        assert!(
            !(r.status == 404 && r.json["detail"] == "no such route") && r.status != 405,
            "{route}: {r:?}"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "Problem",
        "Lead",
        "Sequence",
        "Step",
        "Enrollment",
        "Approval",
        "Task",
        "Message",
        "Activity",
        "Template",
        "Settings",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
});

api_test!(header_names_are_title_case_on_the_wire, {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(
        raw.contains("\r\nContent-Type: application/json\r\n"),
        "{raw}"
    );
    assert!(raw.contains("\r\nX-Request-Id: "), "{raw}");
});

api_test!(serve_returns_once_shutdown_resolves, {
    let app = spawn_app().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(nurture_http::serve(
        listener,
        app.engine.clone(),
        nurture_http::HttpConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    stop.send(()).unwrap();
    let finished = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    finished
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    assert!(
        client.get(format!("{base}/healthz")).send().await.is_err(),
        "nothing listens any more"
    );
});
