//! The test app: a real server on a random port over a fresh database, with a manual clock, and
//! a method per endpoint (zero-to-production's `spawn_app`). [`api_test!`] runs a test once on
//! SQLite and once on PostgreSQL (a database of its own on the server `NURTURE_TEST_PG` names,
//! dropped afterwards), as the behaviour suite does.

use std::sync::Arc;

use jiff::Timestamp;
use nurture_core::Engine;
use nurture_core::clock::{ManualClock, SystemClock};
use nurture_core::store::Store;
use nurture_http::{HttpConfig, serve};
use nurture_postgres::PgStore;
use nurture_postgres::testing::TestDatabase;
use nurture_sqlite::SqliteStore;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// Where the manual clock starts: a Monday morning.
pub const START: &str = "2026-01-05T09:00:00Z";

#[derive(Clone)]
pub struct TestApp {
    pub base: String,
    pub api_key: String,
    pub client: reqwest::Client,
    pub engine: Arc<Engine>,
    db: Arc<Db>,
}

/// The backends a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    /// The backend of the running test ([`api_test!`] sets it; plain tests get SQLite).
    pub static BACKEND: Backend;
}

/// Writes a test once and runs it on every backend: `api_test!(name, { ... });` gives
/// `name::sqlite` and `name::postgres`, in which `spawn_app` opens that backend.
macro_rules! api_test {
    ($name:ident, { $($body:tt)* }) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                crate::helpers::BACKEND
                    .scope(crate::helpers::Backend::Sqlite, async move { $($body)* })
                    .await
            }
            #[tokio::test]
            async fn postgres() {
                crate::helpers::BACKEND
                    .scope(crate::helpers::Backend::Postgres, async move { $($body)* })
                    .await
            }
        }
    };
}

/// What the test's database lives in; dropping it removes the database.
enum Db {
    Sqlite {
        pool: sqlx::SqlitePool,
        _dir: tempfile::TempDir,
    },
    Postgres {
        pool: sqlx::PgPool,
        /// The server's superuser, which row-level security does not filter (for counts).
        admin: sqlx::PgPool,
        _db: Box<TestDatabase>,
    },
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `errors[].path` of a problem.
    pub fn error_paths(&self) -> Vec<String> {
        self.json["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["path"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts a problem+json answer with this status; returns self for more checks.
    #[track_caller]
    pub fn problem(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.json["status"], status, "{}", self.text);
        assert!(
            self.json["title"].is_string() && self.json["detail"].is_string(),
            "{}",
            self.text
        );
        assert_eq!(
            self.json["request_id"].as_str(),
            self.header("x-request-id"),
            "{}",
            self.text
        );
        self
    }

    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "{}", self.text);
        &self.json
    }
}

pub struct Options {
    pub manual_clock: bool,
    pub config: HttpConfig,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            manual_clock: true,
            config: HttpConfig::default(),
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let backend = BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite);
    let (store, db): (Arc<dyn Store>, Db) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = SqliteStore::connect(&format!("sqlite://{}/t.db", dir.path().display()))
                .await
                .expect("sqlite opens");
            let pool = store.pool().clone();
            (Arc::new(store), Db::Sqlite { pool, _dir: dir })
        }
        Backend::Postgres => {
            let db = TestDatabase::create()
                .await
                .expect("a PostgreSQL test database");
            let store = PgStore::connect_with(db.options())
                .await
                .expect("PostgreSQL connects");
            let pool = store.pool().clone();
            let admin = sqlx::PgPool::connect(&db.url())
                .await
                .expect("PostgreSQL connects");
            (
                Arc::new(store),
                Db::Postgres {
                    pool,
                    admin,
                    _db: Box::new(db),
                },
            )
        }
    };
    store.migrate().await.expect("migrations apply");
    let engine = if options.manual_clock {
        let start: Timestamp = START.parse().unwrap();
        Engine::with_manual_clock(store, Arc::new(ManualClock::new(start)))
    } else {
        Engine::new(store, Arc::new(SystemClock))
    };
    let engine = Arc::new(engine);
    let (_, api_key) = engine.create_tenant("t").await.expect("a tenant");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        engine.clone(),
        options.config,
        std::future::pending(),
    ));
    TestApp {
        base,
        api_key,
        client: reqwest::Client::new(),
        engine,
        db: Arc::new(db),
    }
}

impl TestApp {
    /// Rows in `table`, of every tenant.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"));
        match self.db.as_ref() {
            Db::Sqlite { pool, .. } => sqlx::query_scalar(sql).fetch_one(pool).await,
            Db::Postgres { admin, .. } => sqlx::query_scalar(sql).fetch_one(admin).await,
        }
        .expect("a count")
    }

    /// Closes the server's connections to the database, as if it had gone away.
    pub async fn lose_database(&self) {
        match self.db.as_ref() {
            Db::Sqlite { pool, .. } => pool.close().await,
            Db::Postgres { pool, .. } => pool.close().await,
        }
    }

    /// The same server, seen by a new tenant.
    pub async fn other_tenant(&self) -> TestApp {
        let (_, api_key) = self.engine.create_tenant("other").await.unwrap();
        TestApp {
            api_key,
            ..self.clone()
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.expect("the server answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    /// A request with this app's key.
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.req(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(self.req(Method::POST, path).json(&body)).await
    }

    /// A POST without a body.
    pub async fn post_empty(&self, path: &str) -> Resp {
        self.send(self.req(Method::POST, path)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.send(self.req(Method::PUT, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.send(self.req(Method::PATCH, path).json(&body)).await
    }

    /// A body sent as given, with this content type (or none).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
    ) -> Resp {
        let mut req = self.req(method, path).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        self.send(req).await
    }

    /// Every item of a list, following `next_cursor`.
    pub async fn all(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit=1000&cursor={c}"),
                None => format!("{path}{sep}limit=1000"),
            };
            let page = self.get(&url).await;
            let page = page.ok(200);
            out.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    // -- builders over the contract -----------------------------------------------------------

    pub async fn create_template(&self, id: &str) -> Value {
        let body = json!({"id": id, "name": id, "subject": "Hello {{ first_name }}", "body": "Hi {{ first_name }}."});
        self.post("/v1/templates", body).await.ok(201).clone()
    }

    /// A sequence, activated when `activate`.
    pub async fn create_sequence(&self, body: Value, activate: bool) -> Value {
        let seq = self.post("/v1/sequences", body).await.ok(201).clone();
        if activate {
            let id = seq["id"].as_str().unwrap();
            return self
                .post_empty(&format!("/v1/sequences/{id}/activate"))
                .await
                .ok(200)
                .clone();
        }
        seq
    }

    /// A template `a` and an active auto-enrolling sequence of the given steps.
    pub async fn auto_sequence(&self, steps: Value) -> Value {
        self.create_template("a").await;
        self.create_sequence(
            json!({"name": "Auto", "entry_rules": {}, "steps": steps}),
            true,
        )
        .await
    }

    /// A warm, qualified lead (which auto-enrolls where a sequence takes it).
    pub async fn create_lead(&self, extra: Value) -> Value {
        let mut body = json!({
            "email": format!("{}@example.com", uuid::Uuid::now_v7().simple()),
            "first_name": "Ada", "status": "qualified", "score": 60, "score_band": "warm"
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.post("/v1/leads", body).await.ok(201).clone()
    }

    pub async fn advance_hours(&self, hours: f64) -> Value {
        self.post("/v1/clock/advance", json!({"hours": hours}))
            .await
            .ok(200)
            .clone()
    }

    pub async fn enrollments_of(&self, lead_id: &str) -> Vec<Value> {
        self.all(&format!("/v1/enrollments?lead_id={lead_id}"))
            .await
    }
}

pub fn id(v: &Value) -> &str {
    v["id"].as_str().expect("an id")
}

pub fn email_step(order: i64, delay: i64) -> Value {
    json!({"step_order": order, "channel": "email", "delay_hours": delay, "template_id": "a",
           "requires_human_approval": false, "conditions": null})
}
