//! Extractors that turn raw requests into typed input at one boundary, each rejecting with an
//! [`ApiError`] so that even a bad request gets `application/problem+json` (issue #3): a body
//! that is not JSON is 400, JSON of the wrong shape is 422 naming the path, an over-long body
//! is 413, a non-JSON `Content-Type` 415, a bad query parameter 422 naming it, and a path id
//! that cannot exist 404.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{HeaderMap, header, request::Parts};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use nurture_core::store::{Listed, Page};
use nurture_core::{FieldError, Principal};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Reads a whole body, refusing one over `limit` bytes with 413 (issue #3: default 1 MiB).
pub(crate) async fn read_body(body: Body, limit: usize) -> ApiResult<Bytes> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "the request body could not be read: {e}"
        ))),
    }
}

/// Whether the request says its body is JSON (`application/json` or any `+json` type).
fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses JSON text: a syntax error is the client's malformed request (400), not a 422.
fn parse_json(bytes: &[u8]) -> ApiResult<serde_json::Value> {
    let mut value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
    integral_floats_to_integers(&mut value);
    Ok(value)
}

/// JSON has one number type: `3.0` is the integer 3 (JSON Schema says so too), but serde
/// refuses a float where it wants an integer. Whole floats in the integer range are turned
/// into integers once, here, so that every integer field accepts them.
fn integral_floats_to_integers(value: &mut serde_json::Value) {
    const MAX_EXACT_FLOAT_INTEGER: f64 = 9_007_199_254_740_992.0;
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            // Only where a float holds integers exactly (|f| <= 2^53): beyond that, `3e20` or an
            // integer literal that overflowed i64 must stay a float and be refused.
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= MAX_EXACT_FLOAT_INTEGER
            {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// Renders a serde path the way SPEC section 3 writes them: `steps[1].delay_hours`.
fn render_path(prefix: &str, path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = prefix.to_string();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// Turns serde's error into a field error at its path. serde reports a missing field at the
/// object that lacks it, so the field's name is appended to point at it.
fn field_error(prefix: &str, path: &serde_path_to_error::Path, message: String) -> FieldError {
    let mut at = render_path(prefix, path);
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(name) = rest.strip_suffix('`')
    {
        if !at.is_empty() {
            at.push('.');
        }
        at.push_str(name);
    }
    if at.is_empty() {
        at = "body".into();
    }
    FieldError::new(at, message)
}

/// Deserializes parsed JSON into a request type; errors are 422 at the JSON path, rooted at
/// `prefix` (empty for the body itself).
pub(crate) fn from_json<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> ApiResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().clone();
        let message = e.into_inner().to_string();
        ApiError::Invalid(vec![field_error(prefix, &path, message)])
    })
}

/// Reads and parses a JSON body; `None` when the body is empty and `optional`. An empty
/// optional body needs no `Content-Type`; any other body must say it is JSON (415).
async fn json_body(
    req: Request,
    state: &AppState,
    optional: bool,
) -> ApiResult<Option<serde_json::Value>> {
    let (parts, body) = req.into_parts();
    let json_type = has_json_content_type(&parts.headers);
    let bytes = read_body(body, state.body_limit).await?;
    let empty = bytes.iter().all(u8::is_ascii_whitespace);
    match (empty, json_type) {
        (true, _) if optional => Ok(None),
        (_, false) => Err(ApiError::UnsupportedMediaType),
        (true, true) => Err(ApiError::BadRequest(
            "this request needs a JSON body".into(),
        )),
        (false, true) => parse_json(&bytes).map(Some),
    }
}

/// A JSON request body of type `T` (a private request struct with
/// `#[serde(deny_unknown_fields)]`), or the matching problem.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        let value = json_body(req, state, false).await?.unwrap_or_default();
        from_json(value, "").map(ApiJson)
    }
}

/// An optional JSON body: an empty body means `T::default()` (approve, reject, exit).
pub(crate) struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        match json_body(req, state, true).await? {
            None => Ok(OptionalJson(T::default())),
            Some(value) => from_json(value, "").map(OptionalJson),
        }
    }
}

/// The raw JSON body, for endpoints that parse it in more than one way (settings, steps).
pub(crate) struct JsonValue(pub serde_json::Value);

impl FromRequest<AppState> for JsonValue {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        Ok(JsonValue(
            json_body(req, state, false).await?.unwrap_or_default(),
        ))
    }
}

/// Query parameters of type `T`; a bad or unknown one is 422 naming the parameter.
pub(crate) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().clone();
                let message = e.into_inner().to_string();
                let mut error = field_error("", &path, message);
                if error.path == "body" {
                    error.path = "query".into();
                }
                ApiError::Invalid(vec![error])
            })
    }
}

/// The `{id}` of a path, a UUID. Anything else names no object, so it is 404, not 422.
pub(crate) struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("no such object".into()))?;
        Uuid::parse_str(&raw)
            .map(IdPath)
            .map_err(|_| ApiError::NotFound(format!("no object has the id {raw:?}")))
    }
}

/// The `{id}` of a path as text (templates, whose ids the tenant chooses).
pub(crate) struct TextPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TextPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(raw)| TextPath(raw))
            .map_err(|_| ApiError::NotFound("no such object".into()))
    }
}

/// The tenant and user an API key stands for, put in the request by the auth middleware.
pub(crate) struct Tenant(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        parts
            .extensions
            .get::<Principal>()
            .copied()
            .map(Tenant)
            .ok_or(ApiError::Unauthorized)
    }
}

/// For nullable fields of a partial update: absent is `None`, `null` is `Some(None)`.
pub(crate) fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A page of a list (SPEC section 5: `{"items": [...], "next_cursor": ...}`, null on the last).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct List<T> {
    pub items: Vec<T>,
    /// Pass it back as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    /// The store's page as the API's, with the store's key made opaque.
    pub(crate) fn of<U>(listed: Listed<U>, view: impl FnMut(U) -> T) -> List<T> {
        List {
            items: listed.items.into_iter().map(view).collect(),
            next_cursor: listed.next.map(|key| URL_SAFE_NO_PAD.encode(key)),
        }
    }
}

/// `limit` (1..=1000, default 50) and `cursor` as the store's [`Page`]. The cursor is
/// base64url of the store's key: opaque to clients, and a key-set position, so rows added
/// while a client pages neither repeat nor shift the pages it has not read yet.
pub(crate) fn page(limit: Option<i64>, cursor: Option<String>) -> ApiResult<Page> {
    let limit = limit.unwrap_or(Page::DEFAULT_LIMIT as i64);
    if !(1..=Page::MAX_LIMIT as i64).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!(
                "limit must be between 1 and {}, got {limit}",
                Page::MAX_LIMIT
            ),
        ));
    }
    let after = match cursor {
        None => None,
        Some(c) => Some(
            URL_SAFE_NO_PAD
                .decode(c.as_bytes())
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .filter(|key| !key.is_empty())
                .ok_or_else(|| ApiError::invalid("cursor", "not a cursor this list handed out"))?,
        ),
    };
    Ok(Page {
        limit: limit as u32,
        after,
    })
}
