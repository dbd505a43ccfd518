//! The OpenAPI 3.1 document served at `/openapi.json` (SPEC section 5, issue #3).
//!
//! Each operation's success responses, body and parameters come from its handler's
//! `#[utoipa::path]` and its own request and response types. The error answers that every
//! operation shares are added here from what the operation has, mirroring what the middleware
//! and extractors do: a security requirement and 401 under `/v1`, 404 for path ids, 400, 413,
//! 415 and 422 for a JSON body, 422 for query parameters, the `Idempotency-Key` header on POST,
//! 503 for the request timeout and 500 everywhere.

use utoipa::OpenApi as _;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::Type;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Required};

use crate::error::{PROBLEM_JSON, Problem, ProblemFieldError};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Nurture API",
        description = "Multi-tenant lead nurturing: sequences of follow-up steps, enrollments, \
                       human approvals and an activity log. Errors are RFC 9457 problem+json.",
    ),
    components(schemas(Problem, ProblemFieldError)),
    tags(
        (name = "leads", description = "The CRM's leads and their events"),
        (name = "templates", description = "Message templates"),
        (name = "sequences", description = "Sequences of steps and their lifecycle"),
        (name = "enrollments", description = "Leads in sequences"),
        (name = "approvals", description = "Messages waiting for a human (HITL)"),
        (name = "tasks", description = "Human work made by task and call_reminder steps"),
        (name = "messages", description = "The outbox"),
        (name = "activities", description = "The activity log"),
        (name = "settings", description = "Tenant policy"),
        (name = "clock", description = "The manual clock (only with `serve --clock manual`)"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
struct BaseDoc;

/// Where the bearer key scheme is named.
const BEARER: &str = "bearer";

pub(crate) fn base() -> OpenApi {
    let mut doc = BaseDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    if let Some(components) = doc.components.as_mut() {
        components.security_schemes.insert(
            BEARER.into(),
            RefOr::T(SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer))),
        );
        for (name, schema) in crate::schema::components() {
            components.schemas.insert(name.into(), RefOr::T(schema));
        }
    }
    doc
}

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            Content::new(Some(RefOr::Ref(Ref::from_schema_name("Problem")))),
        )
        .build()
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::T(problem(description)));
}

fn has_params(op: &Operation, location: ParameterIn) -> bool {
    op.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => p.parameter_in == location,
        RefOr::Ref(_) => false,
    })
}

fn complete(path: &str, method: &str, op: &mut Operation) {
    let v1 = path.starts_with("/v1/");
    if v1 {
        op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
        add(op, "401", "No or a wrong API key");
    }
    if has_params(op, ParameterIn::Path) {
        add(op, "404", "No such object in this tenant");
    }
    if op.request_body.is_some() {
        add(op, "400", "The body is not JSON");
        add(op, "413", "The body is over the size limit");
        add(op, "415", "The body is not sent as application/json");
        add(
            op,
            "422",
            "Invalid input; `errors` names each problem by its path",
        );
    }
    if has_params(op, ParameterIn::Query) {
        add(op, "422", "A bad query parameter; `errors` names it");
    }
    if v1 && method == "post" {
        let header = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Makes a retry safe: the same key with the same request replays the first \
                 answer (header `idempotent-replayed: true`); with a different request it is 422; \
                 while the first attempt is still running on another server it is 409.",
            ))
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(255))
                    .build(),
            ))
            .build();
        op.parameters
            .get_or_insert_with(Vec::new)
            .push(RefOr::T(header));
        add(
            op,
            "422",
            "The Idempotency-Key was used for a different request",
        );
        add(
            op,
            "409",
            "A request with this Idempotency-Key is still running",
        );
    }
    // The manual clock's routes are outside the request timeout (see `routes::routers`).
    if !path.starts_with("/v1/clock") {
        add(op, "503", "The request took longer than the server allows");
    }
    add(
        op,
        "500",
        "An unexpected error; the body carries the request id",
    );
}

/// Adds the shared error answers, security and headers to every operation.
pub(crate) fn finish(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("patch", &mut item.patch),
            ("delete", &mut item.delete),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                complete(path, method, op);
            }
        }
    }
}

/// The document as served.
pub(crate) fn render(doc: OpenApi) -> Vec<u8> {
    serde_json::to_vec_pretty(&doc).expect("an OpenAPI document serializes")
}
