//! The rule language (SPEC section 3 "Rules"): conditions, `entry_rules` and `exit_rules`.
//!
//! Rules arrive as JSON from the API and the console and are stored as JSON. They are parsed
//! once, at that boundary, into the types below; the engine only ever sees a parsed rule
//! ("parse, don't validate"). Parsing is written by hand over [`serde_json::Value`] rather than
//! derived, because SPEC section 3 asks that a bad rule be refused with *every* problem named by
//! its JSON path (`entry_rules.when.all[1].op: unknown operator "greater"`), which serde's
//! first-error-wins derive cannot give.
//!
//! Architecture invariant: nothing here reads a clock or a store. Evaluation takes the lead, the
//! tenant settings and `now` as arguments, so the engine and the tests drive time.
//!
//! What the rules deliberately do *not* decide: the safety checks (do-not-contact, unsubscribed,
//! existing enrollments, the re-enrollment cooldown) and the mandatory exits (converted,
//! disqualified, unsubscribed, do-not-contact, hard bounce). Those apply whatever a tenant writes
//! in its rules (SPEC sections 3 and 4), so the engine does them itself and a rule cannot switch
//! them off.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::{
    EmailAddress, Lead, LeadStatus, ParseError, Sentiment, exit_reason, text_enum,
};
use crate::error::FieldError;
use crate::settings::TenantSettings;

// ---------------------------------------------------------------------------------------------
// Conditions
// ---------------------------------------------------------------------------------------------

/// A condition over one lead (SPEC section 3): used by `entry_rules.when`, `exit_rules.when` and
/// step `conditions`.
///
/// JSON shapes: `{"all": [C, ...]}`, `{"any": [C, ...]}`, `{"not": C}` and
/// `{"field": F, "op": OP, "value": V}`. `all([])` is true and `any([])` is false, the usual
/// identities, so an empty list never surprises the one who writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Compare(Comparison),
}

/// One `{"field", "op", "value"}` test. `value` stays JSON because a rule compares against JSON
/// data (lead attributes); [`Condition::parse`] has already checked that it fits the field and
/// the operator, so evaluation never meets a value it cannot interpret.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub field: Field,
    pub op: Op,
    pub value: Value,
}

/// The lead fields a condition may read (SPEC section 3 "Fields").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    Status,
    Score,
    ScoreBand,
    Segments,
    Email,
    Company,
    Timezone,
    OwnerId,
    LastReplyAt,
    LastOutboundAt,
    /// `attributes.plan.tier` is `Attribute(["plan", "tier"])`: a lookup into the lead's JSON
    /// attributes, any depth. Segments are never empty.
    Attribute(Vec<String>),
}

text_enum!(
    /// A comparison operator (SPEC section 3 "Operators").
    Op {
        Eq = "eq",
        Ne = "ne",
        In = "in",
        NotIn = "not_in",
        Gt = "gt",
        Gte = "gte",
        Lt = "lt",
        Lte = "lte",
        Contains = "contains",
        Exists = "exists",
        WithinDays = "within_days",
        OlderThanDays = "older_than_days",
    }
);

/// What kind of value a field holds; decides which operators and values make sense for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `status`: one of the lead status names.
    Status,
    /// `score`: an integer.
    Number,
    /// `score_band`, `email`, `company`, `timezone`: text, or null when absent.
    Text,
    /// `owner_id`: a UUID, or null when absent.
    Id,
    /// `segments`: a list of strings.
    List,
    /// `last_reply_at`, `last_outbound_at`: an instant, or absent.
    Time,
    /// `attributes.*`: any JSON; strings are read as RFC 3339 times by the time operators.
    Json,
}

/// The named (non-attribute) fields and their JSON names.
const NAMED_FIELDS: &[(&str, Field)] = &[
    ("status", Field::Status),
    ("score", Field::Score),
    ("score_band", Field::ScoreBand),
    ("segments", Field::Segments),
    ("email", Field::Email),
    ("company", Field::Company),
    ("timezone", Field::Timezone),
    ("owner_id", Field::OwnerId),
    ("last_reply_at", Field::LastReplyAt),
    ("last_outbound_at", Field::LastOutboundAt),
];

const ATTRIBUTE_PREFIX: &str = "attributes.";

impl Field {
    /// Parse a field name: one of the named fields, or `attributes.<key>[.<key>...]` with
    /// non-empty keys. The error is the message for the `field` path.
    pub fn parse(name: &str) -> Result<Field, String> {
        if let Some((_, field)) = NAMED_FIELDS.iter().find(|(n, _)| *n == name) {
            return Ok(field.clone());
        }
        match name.strip_prefix(ATTRIBUTE_PREFIX) {
            Some(rest) if rest.split('.').all(|s| !s.is_empty()) => Ok(Field::Attribute(
                rest.split('.').map(str::to_owned).collect(),
            )),
            Some(_) => Err(format!(
                "unknown field {name:?}: an attribute path needs non-empty keys, like \"attributes.plan.tier\""
            )),
            None => Err(format!("unknown field {name:?}")),
        }
    }

    /// The JSON name: `score_band`, `attributes.plan.tier`.
    pub fn name(&self) -> Cow<'static, str> {
        match self {
            Field::Attribute(path) => Cow::Owned(format!("{ATTRIBUTE_PREFIX}{}", path.join("."))),
            named => Cow::Borrowed(
                NAMED_FIELDS
                    .iter()
                    .find(|(_, f)| f == named)
                    .map(|(n, _)| *n)
                    .expect("every named field is listed in NAMED_FIELDS"),
            ),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Field::Status => Kind::Status,
            Field::Score => Kind::Number,
            Field::ScoreBand | Field::Email | Field::Company | Field::Timezone => Kind::Text,
            Field::OwnerId => Kind::Id,
            Field::Segments => Kind::List,
            Field::LastReplyAt | Field::LastOutboundAt => Kind::Time,
            Field::Attribute(_) => Kind::Json,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Condition {
    /// Parse JSON into a condition. Every problem found is returned with its JSON path rooted at
    /// `path` (`entry_rules.when` gives `entry_rules.when.all[1].op`), so the 422 the API answers
    /// names all of them at once (SPEC section 3).
    pub fn parse(value: &Value, path: &str) -> Result<Condition, Vec<FieldError>> {
        let mut errors = Errors::default();
        let condition = parse_condition(value, path, &mut errors);
        errors.finish(condition, path)
    }

    /// The JSON form; [`Condition::parse`] reads it back to an equal condition.
    pub fn to_json(&self) -> Value {
        match self {
            Condition::All(items) => json_object([("all", conditions_json(items))]),
            Condition::Any(items) => json_object([("any", conditions_json(items))]),
            Condition::Not(inner) => json_object([("not", inner.to_json())]),
            Condition::Compare(c) => c.to_json(),
        }
    }

    /// Does the condition hold for this lead at `now`? `now` is an argument (not a clock read)
    /// so `within_days`/`older_than_days` are deterministic under the manual clock.
    pub fn eval(&self, lead: &Lead, now: Timestamp) -> bool {
        match self {
            Condition::All(items) => items.iter().all(|c| c.eval(lead, now)),
            Condition::Any(items) => items.iter().any(|c| c.eval(lead, now)),
            Condition::Not(inner) => !inner.eval(lead, now),
            Condition::Compare(c) => c.eval(lead, now),
        }
    }
}

impl Comparison {
    pub fn to_json(&self) -> Value {
        json_object([
            ("field", Value::String(self.field.name().into_owned())),
            ("op", Value::String(self.op.as_str().to_owned())),
            ("value", self.value.clone()),
        ])
    }

    /// Evaluate one comparison. The rules of thumb, so a rule never fails at run time:
    /// an absent value (missing attribute, null company, no reply yet) counts as JSON null;
    /// ordering and `contains` on an absent or mismatched value are false; `ne`/`not_in` are the
    /// exact negations of `eq`/`in`; and a missing time is "older than" anything (SPEC section 3).
    pub fn eval(&self, lead: &Lead, now: Timestamp) -> bool {
        let actual = actual(&self.field, lead);
        match self.op {
            Op::Eq => equals(&self.field, &actual, &self.value),
            Op::Ne => !equals(&self.field, &actual, &self.value),
            Op::In => is_in(&self.field, &actual, &self.value),
            Op::NotIn => !is_in(&self.field, &actual, &self.value),
            Op::Gt => order(&actual, &self.value) == Some(Ordering::Greater),
            Op::Gte => order(&actual, &self.value).is_some_and(Ordering::is_ge),
            Op::Lt => order(&actual, &self.value) == Some(Ordering::Less),
            Op::Lte => order(&actual, &self.value).is_some_and(Ordering::is_le),
            Op::Contains => contains(&actual, &self.value),
            Op::Exists => actual.is_present() == self.value.as_bool().unwrap_or(true),
            Op::WithinDays => match (actual.time(), days_in_nanos(&self.value)) {
                (Some(at), Some(limit)) => now.duration_since(at).as_nanos() <= limit,
                _ => false,
            },
            Op::OlderThanDays => match (actual.time(), days_in_nanos(&self.value)) {
                (None, Some(_)) => true,
                (Some(at), Some(limit)) => now.duration_since(at).as_nanos() > limit,
                (_, None) => false,
            },
        }
    }
}

fn conditions_json(items: &[Condition]) -> Value {
    Value::Array(items.iter().map(Condition::to_json).collect())
}

fn json_object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// A lead field's value as a comparison sees it.
enum Actual<'a> {
    /// Text, numbers, lists and attributes, as JSON; null when absent.
    Json(Cow<'a, Value>),
    /// `last_reply_at` / `last_outbound_at`.
    Time(Option<Timestamp>),
}

impl Actual<'_> {
    fn is_present(&self) -> bool {
        match self {
            Actual::Json(v) => !v.is_null(),
            Actual::Time(t) => t.is_some(),
        }
    }

    /// The value as an instant: a time field, or an attribute string in RFC 3339. Anything else
    /// (absent, a number, a string that is not a time) is no time at all, hence "older than"
    /// every N and never "within".
    fn time(&self) -> Option<Timestamp> {
        match self {
            Actual::Time(t) => *t,
            Actual::Json(v) => v.as_str().and_then(parse_time),
        }
    }
}

fn actual<'a>(field: &Field, lead: &'a Lead) -> Actual<'a> {
    let text = |s: Option<&str>| {
        Actual::Json(Cow::Owned(
            s.map_or(Value::Null, |s| Value::String(s.to_owned())),
        ))
    };
    match field {
        Field::Status => text(Some(lead.status.as_str())),
        Field::Score => Actual::Json(Cow::Owned(Value::from(lead.score))),
        Field::ScoreBand => text(lead.score_band.as_deref()),
        Field::Segments => Actual::Json(Cow::Owned(Value::from(lead.segments.clone()))),
        Field::Email => text(Some(lead.email.as_str())),
        Field::Company => text(lead.company.as_deref()),
        Field::Timezone => text(lead.timezone.as_ref().map(|tz| tz.as_str())),
        Field::OwnerId => Actual::Json(Cow::Owned(
            lead.owner_id
                .map_or(Value::Null, |id| Value::String(id.to_string())),
        )),
        Field::LastReplyAt => Actual::Time(lead.last_reply_at),
        Field::LastOutboundAt => Actual::Time(lead.last_outbound_at),
        Field::Attribute(path) => {
            // Each key looks into an object; anything else on the way means "absent".
            let mut keys = path.iter();
            let found = keys.next().and_then(|first| {
                keys.try_fold(lead.attributes.get(first.as_str())?, |v, key| {
                    v.as_object()?.get(key.as_str())
                })
            });
            Actual::Json(found.map_or(Cow::Owned(Value::Null), Cow::Borrowed))
        }
    }
}

/// The rule's value in the form the lead stores, so that equality means what a person means:
/// an owner id matches whatever the UUID's case, an email whatever its domain's case (the lead's
/// address is stored with a lower-cased domain, see [`EmailAddress`]).
fn canonical<'v>(field: &Field, value: &'v Value) -> Cow<'v, Value> {
    match (field, value) {
        (Field::OwnerId, Value::String(s)) => match uuid::Uuid::parse_str(s) {
            Ok(id) => Cow::Owned(Value::String(id.to_string())),
            Err(_) => Cow::Borrowed(value),
        },
        (Field::Email, Value::String(s)) => match EmailAddress::parse(s) {
            Ok(e) => Cow::Owned(Value::String(e.as_str().to_owned())),
            Err(_) => Cow::Borrowed(value),
        },
        _ => Cow::Borrowed(value),
    }
}

fn equals(field: &Field, actual: &Actual<'_>, value: &Value) -> bool {
    let value = canonical(field, value);
    match actual {
        Actual::Json(a) => json_eq(a, &value),
        Actual::Time(t) => match (t, &*value) {
            (None, Value::Null) => true,
            (Some(t), Value::String(s)) => parse_time(s) == Some(*t),
            _ => false,
        },
    }
}

/// Membership. For a list value (segments, an array attribute) `in` means "has at least one of
/// these": `segments in ["saas", "fintech"]` reads the way a CRM user means it.
fn is_in(field: &Field, actual: &Actual<'_>, value: &Value) -> bool {
    let Value::Array(options) = value else {
        return false;
    };
    if let Actual::Json(a) = actual
        && let Value::Array(items) = &**a
    {
        return items
            .iter()
            .any(|item| options.iter().any(|o| json_eq(item, &canonical(field, o))));
    }
    options.iter().any(|o| equals(field, actual, o))
}

/// `actual` compared to `value`: numbers numerically, instants as instants (an RFC 3339 string
/// on either side of a time), other strings as text. `None` (so every ordering operator is
/// false) when either side is absent or the types do not match.
fn order(actual: &Actual<'_>, value: &Value) -> Option<Ordering> {
    match actual {
        Actual::Time(t) => Some(t.as_ref()?.cmp(&parse_time(value.as_str()?)?)),
        Actual::Json(a) => match (&**a, value) {
            (Value::Number(x), Value::Number(y)) => number_cmp(x, y),
            (Value::String(x), Value::String(y)) => match (parse_time(x), parse_time(y)) {
                (Some(x), Some(y)) => Some(x.cmp(&y)),
                _ => Some(x.as_str().cmp(y.as_str())),
            },
            _ => None,
        },
    }
}

/// `contains`: a list holds the value, or a text holds the substring (case-sensitive, as
/// SPEC section 3 says nothing of case folding and exact is the predictable choice).
fn contains(actual: &Actual<'_>, value: &Value) -> bool {
    let Actual::Json(a) = actual else {
        return false;
    };
    match (&**a, value) {
        (Value::Array(items), v) => items.iter().any(|item| json_eq(item, v)),
        (Value::String(text), Value::String(needle)) => text.contains(needle.as_str()),
        (Value::String(text), v @ (Value::Number(_) | Value::Bool(_))) => {
            text.contains(&v.to_string())
        }
        _ => false,
    }
}

/// JSON equality where numbers compare by value (`60 == 60.0`) and two strings that are the
/// same instant written differently (`...Z` and `...+01:00`) are equal.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Some(Ordering::Equal),
        (Value::String(x), Value::String(y)) => {
            x == y || matches!((parse_time(x), parse_time(y)), (Some(p), Some(q)) if p == q)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Exact for integers, by `f64` otherwise.
fn number_cmp(x: &serde_json::Number, y: &serde_json::Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
        return Some(x.cmp(&y));
    }
    x.as_f64()?.partial_cmp(&y.as_f64()?)
}

fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

const NANOS_PER_DAY: i128 = 86_400 * 1_000_000_000;

/// A `within_days`/`older_than_days` value as nanoseconds; fractional days are allowed
/// (`0.5` is twelve hours). `None` for a value parsing would have refused.
fn days_in_nanos(value: &Value) -> Option<i128> {
    if let Some(days) = value.as_u64() {
        return Some(i128::from(days) * NANOS_PER_DAY);
    }
    let days = value.as_f64().filter(|d| *d >= 0.0)?;
    // `as` saturates, so an absurdly large number of days is just "forever".
    Some((days * NANOS_PER_DAY as f64) as i128)
}

fn whole_days(days: u32) -> SignedDuration {
    SignedDuration::from_hours(i64::from(days) * 24)
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Collects every problem, so one answer lists them all.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    fn count(&self) -> usize {
        self.0.len()
    }

    fn finish<T>(self, value: Option<T>, path: &str) -> Result<T, Vec<FieldError>> {
        match value {
            Some(v) if self.0.is_empty() => Ok(v),
            // A parse function returns `None` only after recording why; the fallback keeps an
            // invalid rule from ever being accepted should one forget.
            _ if self.0.is_empty() => Err(vec![FieldError::new(path, "invalid")]),
            _ => Err(self.0),
        }
    }
}

fn key_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn index_path(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

fn unknown_keys(map: &Map<String, Value>, known: &[&str], path: &str, errors: &mut Errors) {
    for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
        errors.add(key_path(path, key), format!("unknown field {key:?}"));
    }
}

const CONDITION_SHAPES: &str =
    r#"{"all": [...]}, {"any": [...]}, {"not": {...}} or {"field": ..., "op": ..., "value": ...}"#;
const COMBINATORS: [&str; 3] = ["all", "any", "not"];
const COMPARISON_KEYS: [&str; 3] = ["field", "op", "value"];

fn parse_condition(value: &Value, path: &str, errors: &mut Errors) -> Option<Condition> {
    let Value::Object(map) = value else {
        errors.add(
            path,
            format!("expected an object: a condition is {CONDITION_SHAPES}"),
        );
        return None;
    };
    let combinators: Vec<&str> = COMBINATORS
        .into_iter()
        .filter(|k| map.contains_key(*k))
        .collect();
    let is_comparison = COMPARISON_KEYS.iter().any(|k| map.contains_key(*k));
    match (combinators.as_slice(), is_comparison) {
        ([], true) => {
            unknown_keys(map, &COMPARISON_KEYS, path, errors);
            parse_comparison(map, path, errors).map(Condition::Compare)
        }
        (&[key], false) => {
            unknown_keys(map, &[key], path, errors);
            let inner_path = key_path(path, key);
            let inner = &map[key];
            if key == "not" {
                let inner = parse_condition(inner, &inner_path, errors)?;
                return Some(Condition::Not(Box::new(inner)));
            }
            let items = parse_condition_list(inner, &inner_path, errors)?;
            Some(if key == "all" {
                Condition::All(items)
            } else {
                Condition::Any(items)
            })
        }
        ([], false) => {
            unknown_keys(map, &[], path, errors);
            errors.add(path, format!("expected a condition: {CONDITION_SHAPES}"));
            None
        }
        _ => {
            errors.add(
                path,
                format!("a condition has exactly one of these shapes: {CONDITION_SHAPES}"),
            );
            None
        }
    }
}

fn parse_condition_list(value: &Value, path: &str, errors: &mut Errors) -> Option<Vec<Condition>> {
    let Value::Array(items) = value else {
        errors.add(path, "expected an array of conditions");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut complete = true;
    for (i, item) in items.iter().enumerate() {
        match parse_condition(item, &index_path(path, i), errors) {
            Some(c) => out.push(c),
            None => complete = false,
        }
    }
    complete.then_some(out)
}

fn parse_comparison(
    map: &Map<String, Value>,
    path: &str,
    errors: &mut Errors,
) -> Option<Comparison> {
    let field_path = key_path(path, "field");
    let field = match map.get("field") {
        None => {
            errors.add(
                &field_path,
                "required: the lead field to compare, like \"score\"",
            );
            None
        }
        Some(Value::String(name)) => Field::parse(name)
            .map_err(|m| errors.add(&field_path, m))
            .ok(),
        Some(_) => {
            errors.add(&field_path, "expected a string, the name of a lead field");
            None
        }
    };
    let op_path = key_path(path, "op");
    let op = match map.get("op") {
        None => {
            errors.add(&op_path, "required: the operator, like \"eq\"");
            None
        }
        Some(Value::String(name)) => Op::from_str(name)
            .map_err(|_| errors.add(&op_path, format!("unknown operator {name:?}")))
            .ok(),
        Some(_) => {
            errors.add(&op_path, "expected a string, the name of an operator");
            None
        }
    };
    let (field, op) = (field?, op?);
    let value = match map.get("value") {
        // `{"field": "company", "op": "exists"}` reads naturally as "company exists".
        None if op == Op::Exists => Value::Bool(true),
        None => {
            errors.add(key_path(path, "value"), "required");
            return None;
        }
        Some(v) => v.clone(),
    };
    let before = errors.count();
    check_comparison(&field, op, &value, path, errors);
    (errors.count() == before).then_some(Comparison { field, op, value })
}

/// Refuse the comparisons that could never mean anything, at the path of the part that is
/// wrong: the operator when it does not apply to the field, the value (or the element of a
/// value list) when it does not fit.
fn check_comparison(field: &Field, op: Op, value: &Value, path: &str, errors: &mut Errors) {
    let kind = field.kind();
    if let Some(why) = inapplicable(kind, op) {
        errors.add(
            key_path(path, "op"),
            format!(
                "operator {:?} does not apply to field {:?}: {why}",
                op.as_str(),
                field.name()
            ),
        );
        return;
    }
    let value_path = key_path(path, "value");
    let checked = match op {
        Op::Exists => match value {
            Value::Bool(_) => Ok(()),
            _ => Err("expected a boolean: true for \"is present\", false for \"is absent\"".into()),
        },
        Op::In | Op::NotIn => {
            let Value::Array(items) = value else {
                errors.add(value_path, "expected an array");
                return;
            };
            for (i, item) in items.iter().enumerate() {
                if let Err(message) = check_member(kind, item) {
                    errors.add(index_path(&value_path, i), message);
                }
            }
            Ok(())
        }
        Op::Eq | Op::Ne => check_equal(kind, value),
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => check_ordered(kind, value),
        Op::Contains => check_contained(kind, value),
        Op::WithinDays | Op::OlderThanDays => match value.as_f64() {
            Some(days) if days >= 0.0 => Ok(()),
            _ => Err("expected a non-negative number of days".into()),
        },
    };
    if let Err(message) = checked {
        errors.add(value_path, message);
    }
}

/// Why `op` makes no sense on a field of this kind, if it does not.
fn inapplicable(kind: Kind, op: Op) -> Option<&'static str> {
    match op {
        Op::Gt | Op::Gte | Op::Lt | Op::Lte
            if matches!(kind, Kind::Status | Kind::List | Kind::Id) =>
        {
            Some("ordering compares numbers, times and text")
        }
        Op::Contains if matches!(kind, Kind::Number | Kind::Time) => {
            Some("contains looks into a list or a text")
        }
        Op::WithinDays | Op::OlderThanDays if !matches!(kind, Kind::Time | Kind::Json) => {
            Some("it applies only to times: last_reply_at, last_outbound_at or attributes.*")
        }
        _ => None,
    }
}

const TIME_EXPECTED: &str = "expected an RFC 3339 time, like \"2025-01-31T09:00:00Z\"";

fn is_time(value: &Value) -> bool {
    value.as_str().and_then(parse_time).is_some()
}

fn check_status(value: &Value) -> Result<(), String> {
    match value {
        Value::String(s) => LeadStatus::from_str(s)
            .map(|_| ())
            .map_err(|ParseError(m)| m),
        _ => Err(format!(
            "expected a lead status, one of: {}",
            LeadStatus::ALL
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The value of `eq`/`ne`.
fn check_equal(kind: Kind, value: &Value) -> Result<(), String> {
    let fits = match kind {
        Kind::Status => return check_status(value),
        Kind::Number => value.is_number(),
        Kind::Text => value.is_string() || value.is_null(),
        Kind::Id => {
            value.is_null()
                || value
                    .as_str()
                    .is_some_and(|s| uuid::Uuid::parse_str(s).is_ok())
        }
        Kind::List => value
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string)),
        Kind::Time => value.is_null() || is_time(value),
        Kind::Json => true,
    };
    fits.then_some(()).ok_or_else(|| {
        match kind {
            Kind::Number => "expected a number",
            Kind::Text => "expected a string or null",
            Kind::Id => "expected a UUID or null",
            Kind::List => "expected an array of strings",
            Kind::Time => TIME_EXPECTED,
            Kind::Status | Kind::Json => "unexpected value",
        }
        .into()
    })
}

/// One element of an `in`/`not_in` list: a segment name for a list, otherwise what `eq` takes.
fn check_member(kind: Kind, value: &Value) -> Result<(), String> {
    match kind {
        Kind::List if value.is_string() => Ok(()),
        Kind::List => Err("expected a string, a segment name".into()),
        _ => check_equal(kind, value),
    }
}

/// The value of `gt`/`gte`/`lt`/`lte`.
fn check_ordered(kind: Kind, value: &Value) -> Result<(), String> {
    let (fits, expected) = match kind {
        Kind::Number => (value.is_number(), "expected a number"),
        Kind::Time => (is_time(value), TIME_EXPECTED),
        Kind::Text => (value.is_string(), "expected a string"),
        Kind::Json => (
            value.is_number() || value.is_string(),
            "expected a number, a string or an RFC 3339 time",
        ),
        Kind::Status | Kind::List | Kind::Id => (true, ""),
    };
    fits.then_some(()).ok_or_else(|| expected.into())
}

/// The value of `contains`: a segment name for the segment list, a scalar otherwise.
fn check_contained(kind: Kind, value: &Value) -> Result<(), String> {
    match kind {
        Kind::List if value.is_string() => Ok(()),
        Kind::List => Err("expected a string, a segment name".into()),
        _ if value.is_string() || value.is_number() || value.is_boolean() => Ok(()),
        _ => Err("expected a string, a number or a boolean".into()),
    }
}

/// `null` for an optional key means the same as leaving it out: CRMs often send every key.
fn present(value: &Value) -> Option<&Value> {
    (!value.is_null()).then_some(value)
}

/// A non-empty array of strings, each turned into a `T` by `item`; errors at `path[i]`.
fn parse_string_list<T>(
    value: &Value,
    path: &str,
    errors: &mut Errors,
    if_empty: &str,
    item: impl Fn(&str) -> Result<T, String>,
) -> Option<Vec<T>> {
    let Value::Array(items) = value else {
        errors.add(path, "expected an array of strings");
        return None;
    };
    if items.is_empty() {
        // An empty list would match no lead at all: far more likely a mistake than a wish.
        errors.add(path, format!("must not be empty; {if_empty}"));
        return None;
    }
    let before = errors.count();
    let mut out = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        match v
            .as_str()
            .ok_or_else(|| "expected a string".to_owned())
            .and_then(&item)
        {
            Ok(t) => out.push(t),
            Err(message) => errors.add(index_path(path, i), message),
        }
    }
    (errors.count() == before).then_some(out)
}

/// A whole number of days, at least `min`.
fn parse_days(value: &Value, path: &str, errors: &mut Errors, min: u32) -> Option<u32> {
    let expected = if min == 0 {
        "expected a non-negative integer (days)"
    } else {
        "expected a positive integer (days)"
    };
    match value.as_u64() {
        Some(n) if n >= u64::from(min) => match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                errors.add(path, "too large");
                None
            }
        },
        _ => {
            errors.add(path, expected);
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry rules
// ---------------------------------------------------------------------------------------------

/// The statuses a lead may be enrolled from when `entry_rules.statuses` is omitted
/// (SPEC section 3): a converted or disqualified lead is not nurtured.
pub const DEFAULT_ENTRY_STATUSES: &[LeadStatus] = &[
    LeadStatus::New,
    LeadStatus::Contacted,
    LeadStatus::Qualified,
];

/// When a lead is auto-enrolled (SPEC section 3 `entry_rules`, seed "Enrollment rules").
/// Every key is optional; `None` means the SPEC default, which for `score_bands` and
/// `no_reply_within_days` is the tenant's setting *at evaluation time*, so changing the setting
/// changes every sequence that did not override it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EntryRules {
    pub statuses: Option<Vec<LeadStatus>>,
    pub score_bands: Option<Vec<String>>,
    pub segments_any: Option<Vec<String>>,
    pub min_score: Option<i64>,
    pub no_reply_within_days: Option<u32>,
    pub when: Option<Condition>,
}

const ENTRY_KEYS: [&str; 6] = [
    "statuses",
    "score_bands",
    "segments_any",
    "min_score",
    "no_reply_within_days",
    "when",
];

impl EntryRules {
    /// Parse `entry_rules` JSON (an object; `{}` means all defaults). The caller maps JSON null
    /// to "manual enrollment only" before calling this. Errors are rooted at `path`.
    pub fn parse(value: &Value, path: &str) -> Result<EntryRules, Vec<FieldError>> {
        let Value::Object(map) = value else {
            return Err(vec![FieldError::new(path, "expected an object")]);
        };
        let mut errors = Errors::default();
        let mut rules = EntryRules::default();
        unknown_keys(map, &ENTRY_KEYS, path, &mut errors);
        for key in ENTRY_KEYS {
            let Some(v) = map.get(key).and_then(present) else {
                continue;
            };
            let p = key_path(path, key);
            match key {
                "statuses" => {
                    rules.statuses = parse_string_list(
                        v,
                        &p,
                        &mut errors,
                        "omit it for new, contacted and qualified",
                        |s| LeadStatus::from_str(s).map_err(|ParseError(m)| m),
                    );
                }
                "score_bands" => {
                    rules.score_bands = parse_string_list(
                        v,
                        &p,
                        &mut errors,
                        "omit it for the tenant's warm bands",
                        |s| Ok(s.to_owned()),
                    );
                }
                "segments_any" => {
                    rules.segments_any = parse_string_list(
                        v,
                        &p,
                        &mut errors,
                        "omit it to accept any segments",
                        |s| Ok(s.to_owned()),
                    );
                }
                "min_score" => match v.as_i64() {
                    Some(n) => rules.min_score = Some(n),
                    None => errors.add(p, "expected an integer"),
                },
                "no_reply_within_days" => {
                    rules.no_reply_within_days = parse_days(v, &p, &mut errors, 0);
                }
                _ => rules.when = parse_condition(v, &p, &mut errors),
            }
        }
        errors.finish(Some(rules), path)
    }

    /// The JSON form, without the keys left to their defaults.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        if let Some(statuses) = &self.statuses {
            let names = statuses.iter().map(|s| Value::from(s.as_str())).collect();
            map.insert("statuses".into(), Value::Array(names));
        }
        if let Some(bands) = &self.score_bands {
            map.insert("score_bands".into(), Value::from(bands.clone()));
        }
        if let Some(segments) = &self.segments_any {
            map.insert("segments_any".into(), Value::from(segments.clone()));
        }
        if let Some(n) = self.min_score {
            map.insert("min_score".into(), Value::from(n));
        }
        if let Some(n) = self.no_reply_within_days {
            map.insert("no_reply_within_days".into(), Value::from(n));
        }
        if let Some(when) = &self.when {
            map.insert("when".into(), when.to_json());
        }
        Value::Object(map)
    }

    /// Do the entry rules accept this lead now? Only the rules: the engine checks the safety
    /// conditions (do-not-contact, unsubscribed, live enrollment, cooldown) itself, because SPEC
    /// section 4 "Enrollment" applies them to manual enrollment too.
    pub fn matches(&self, lead: &Lead, settings: &TenantSettings, now: Timestamp) -> bool {
        self.first_mismatch(lead, settings, now).is_none()
    }

    /// The first entry rule this lead fails, by its key (`"statuses"`, `"score_bands"`,
    /// `"segments_any"`, `"min_score"`, `"no_reply_within_days"`, `"when"`), or `None` if all
    /// hold: what the activity log and the console say when asked "why was this lead not
    /// enrolled?".
    pub fn first_mismatch(
        &self,
        lead: &Lead,
        settings: &TenantSettings,
        now: Timestamp,
    ) -> Option<&'static str> {
        let statuses = self.statuses.as_deref().unwrap_or(DEFAULT_ENTRY_STATUSES);
        if !statuses.contains(&lead.status) {
            return Some("statuses");
        }
        // Seed: "score_band is warm (or tenant-defined)". A lead without a band is not warm.
        let bands = self
            .score_bands
            .as_ref()
            .unwrap_or(&settings.warm_score_bands);
        if !lead
            .score_band
            .as_ref()
            .is_some_and(|band| bands.contains(band))
        {
            return Some("score_bands");
        }
        if let Some(wanted) = &self.segments_any
            && !lead.segments.iter().any(|s| wanted.contains(s))
        {
            return Some("segments_any");
        }
        if let Some(min) = self.min_score
            && lead.score < min
        {
            return Some("min_score");
        }
        // Seed: "no open reply thread in last N days". `last_reply_at` never holds an
        // out-of-office (SPEC section 3), so there is nothing to filter here.
        let days = self
            .no_reply_within_days
            .unwrap_or(settings.reply_window_days);
        if lead
            .last_reply_at
            .is_some_and(|at| now.duration_since(at) <= whole_days(days))
        {
            return Some("no_reply_within_days");
        }
        if let Some(when) = &self.when
            && !when.eval(lead, now)
        {
            return Some("when");
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Exit rules
// ---------------------------------------------------------------------------------------------

text_enum!(
    /// Which replies end an enrollment (SPEC section 3 `exit_rules.on_reply`). A positive reply
    /// ends it either way (SPEC section 6: "exit on any positive reply: always on").
    OnReply { Positive = "positive", Any = "any" }
);

// `text_enum!` cannot mark a `#[default]` variant, so the derive clippy suggests is not available.
#[allow(clippy::derivable_impls)]
impl Default for OnReply {
    fn default() -> Self {
        OnReply::Positive
    }
}

/// When an enrollment ends early by the sequence's own rules (SPEC section 3 `exit_rules`).
/// The default (JSON null or `{}`) exits on a positive reply only.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExitRules {
    pub on_reply: OnReply,
    /// Exit after this many days without engagement (reply, open, click).
    pub inactivity_days: Option<u32>,
    /// Exit when this holds.
    pub when: Option<Condition>,
}

const EXIT_KEYS: [&str; 3] = ["on_reply", "inactivity_days", "when"];

impl ExitRules {
    /// Parse `exit_rules` JSON; null means the defaults. Errors are rooted at `path`.
    pub fn parse(value: &Value, path: &str) -> Result<ExitRules, Vec<FieldError>> {
        let map = match value {
            Value::Null => return Ok(ExitRules::default()),
            Value::Object(map) => map,
            _ => return Err(vec![FieldError::new(path, "expected an object or null")]),
        };
        let mut errors = Errors::default();
        let mut rules = ExitRules::default();
        unknown_keys(map, &EXIT_KEYS, path, &mut errors);
        for key in EXIT_KEYS {
            let Some(v) = map.get(key).and_then(present) else {
                continue;
            };
            let p = key_path(path, key);
            match key {
                "on_reply" => match v.as_str().map(OnReply::from_str) {
                    Some(Ok(on_reply)) => rules.on_reply = on_reply,
                    Some(Err(ParseError(message))) => errors.add(p, message),
                    None => errors.add(p, "expected a string: \"positive\" or \"any\""),
                },
                "inactivity_days" => rules.inactivity_days = parse_days(v, &p, &mut errors, 1),
                _ => rules.when = parse_condition(v, &p, &mut errors),
            }
        }
        errors.finish(Some(rules), path)
    }

    /// The JSON form: `on_reply` always, the other keys when set.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("on_reply".into(), Value::from(self.on_reply.as_str()));
        if let Some(days) = self.inactivity_days {
            map.insert("inactivity_days".into(), Value::from(days));
        }
        if let Some(when) = &self.when {
            map.insert("when".into(), when.to_json());
        }
        Value::Object(map)
    }

    /// Does a reply with this sentiment end the enrollment, and with which `exit_reason`?
    /// An out-of-office is never a reply (SPEC section 3); a positive reply always ends it
    /// (a mandatory exit, SPEC section 4); neutral and negative ones only under `on_reply: any`.
    pub fn reply_exit(&self, sentiment: Sentiment) -> Option<&'static str> {
        match sentiment {
            Sentiment::OutOfOffice => None,
            Sentiment::Positive => Some(exit_reason::POSITIVE_REPLY),
            Sentiment::Neutral | Sentiment::Negative => {
                (self.on_reply == OnReply::Any).then_some(exit_reason::REPLIED)
            }
        }
    }

    /// The rule-driven exits, checked when a step comes due (SPEC section 4 "Step execution"
    /// item 1), in order: a counted reply since enrolment, inactivity, then `when`. Returns the
    /// `exit_reason`. The mandatory status and flag exits (converted, do-not-contact, ...) are the
    /// engine's, checked before this.
    ///
    /// A reply recorded without a sentiment is taken as neutral: it counts under `on_reply: any`
    /// but is not assumed to be positive.
    pub fn check(
        &self,
        lead: &Lead,
        enrolled_on: Timestamp,
        now: Timestamp,
    ) -> Option<&'static str> {
        if let Some(replied_at) = lead.last_reply_at
            && replied_at >= enrolled_on
            && let Some(reason) =
                self.reply_exit(lead.last_reply_sentiment.unwrap_or(Sentiment::Neutral))
        {
            return Some(reason);
        }
        if let Some(days) = self.inactivity_days {
            // "for that many days since enrolment or its last engagement" (SPEC section 3).
            // A reply is engagement too; it is included should the two ever disagree.
            let since = [lead.last_engaged_at, lead.last_reply_at]
                .into_iter()
                .flatten()
                .fold(enrolled_on, Timestamp::max);
            if now.duration_since(since) >= whole_days(days) {
                return Some(exit_reason::INACTIVE);
            }
        }
        if self.when.as_ref().is_some_and(|c| c.eval(lead, now)) {
            return Some(exit_reason::EXIT_RULE);
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// serde, for storing rules as JSON columns and embedding them in API bodies
// ---------------------------------------------------------------------------------------------

/// The errors of a failed parse in one line, for serde's single message.
fn joined(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| {
            if e.path.is_empty() {
                e.message.clone()
            } else {
                e.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

macro_rules! serde_via_json {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.to_json().serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = Value::deserialize(deserializer)?;
                <$ty>::parse(&value, "").map_err(|e| serde::de::Error::custom(joined(&e)))
            }
        }
    };
}

serde_via_json!(Condition);
serde_via_json!(EntryRules);
serde_via_json!(ExitRules);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EmailAddress, TimeZoneName};
    use proptest::prelude::*;
    use serde_json::json;

    const OWNER: &str = "0190b5a2-7c4e-7d3a-9f00-000000000001";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn now() -> Timestamp {
        ts("2025-06-15T12:00:00Z")
    }

    fn days_ago(days: i64) -> Timestamp {
        now() - SignedDuration::from_hours(days * 24)
    }

    fn hours_ago(hours: i64) -> Timestamp {
        now() - SignedDuration::from_hours(hours)
    }

    /// A warm, contacted lead with every kind of field filled in, and no reply yet.
    fn lead() -> Lead {
        let attributes = json!({
            "plan": {"tier": "pro", "seats": 12},
            "signup_at": "2025-06-01T09:00:00Z",
            "tags": ["beta", "vip"],
            "trial": null,
            "note": "not a time",
        });
        Lead {
            id: uuid::Uuid::nil(),
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            company: Some("Acme Corp".into()),
            timezone: Some(TimeZoneName::parse("Europe/Paris").unwrap()),
            status: LeadStatus::Contacted,
            score: 60,
            score_band: Some("warm".into()),
            segments: vec!["saas".into(), "emea".into()],
            attributes: attributes.as_object().unwrap().clone(),
            owner_id: Some(uuid::Uuid::parse_str(OWNER).unwrap()),
            last_outbound_at: Some(days_ago(3)),
            updated_at: days_ago(1),
            ..Lead::new(
                uuid::Uuid::nil(),
                EmailAddress::parse("Ada@Example.com").unwrap(),
                days_ago(30),
            )
        }
    }

    /// A lead with every optional field empty.
    fn bare_lead() -> Lead {
        Lead {
            first_name: None,
            last_name: None,
            company: None,
            timezone: None,
            score_band: None,
            segments: vec![],
            attributes: Map::new(),
            owner_id: None,
            last_outbound_at: None,
            ..lead()
        }
    }

    fn cond(value: Value) -> Condition {
        Condition::parse(&value, "when").unwrap_or_else(|e| panic!("{value} refused: {e:?}"))
    }

    fn holds(value: Value, lead: &Lead) -> bool {
        cond(value).eval(lead, now())
    }

    fn check(field: &str, op: &str, value: Value, lead: &Lead) -> bool {
        holds(json!({"field": field, "op": op, "value": value}), lead)
    }

    /// `(path, message)` of every error, rooted at `entry_rules.when`.
    fn errors(value: Value) -> Vec<(String, String)> {
        Condition::parse(&value, "entry_rules.when")
            .expect_err("should be refused")
            .into_iter()
            .map(|e| (e.path, e.message))
            .collect()
    }

    fn error_paths(value: Value) -> Vec<String> {
        errors(value).into_iter().map(|(p, _)| p).collect()
    }

    fn cmp(field: &str, op: &str, value: Value) -> Value {
        json!({"field": field, "op": op, "value": value})
    }

    // --- parsing: shapes and paths ------------------------------------------------------------

    #[test]
    fn parses_every_shape() {
        let c = cond(json!({"all": [
            {"field": "score", "op": "gte", "value": 50},
            {"any": []},
            {"not": {"field": "attributes.plan.tier", "op": "eq", "value": "free"}},
        ]}));
        let expected = Condition::All(vec![
            Condition::Compare(Comparison {
                field: Field::Score,
                op: Op::Gte,
                value: json!(50),
            }),
            Condition::Any(vec![]),
            Condition::Not(Box::new(Condition::Compare(Comparison {
                field: Field::Attribute(vec!["plan".into(), "tier".into()]),
                op: Op::Eq,
                value: json!("free"),
            }))),
        ]);
        assert_eq!(c, expected);
        assert_eq!(Condition::parse(&c.to_json(), "x"), Ok(c));
    }

    #[test]
    fn field_names_round_trip() {
        for (name, field) in NAMED_FIELDS {
            assert_eq!(Field::parse(name).as_ref(), Ok(field));
            assert_eq!(field.name(), *name);
        }
        let deep = Field::parse("attributes.a.b.c").unwrap();
        assert_eq!(
            deep,
            Field::Attribute(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(deep.to_string(), "attributes.a.b.c");
        assert_eq!(
            Field::parse("attributes.x").unwrap(),
            Field::Attribute(vec!["x".into()])
        );
    }

    #[test]
    fn bad_field_names_are_refused_at_field() {
        for name in ["stage", "attributes", "Score", ""] {
            assert_eq!(
                errors(cmp(name, "eq", json!(1))),
                vec![(
                    "entry_rules.when.field".to_owned(),
                    format!("unknown field {name:?}")
                )]
            );
        }
        for name in ["attributes.", "attributes.a..b", "attributes.a."] {
            let errs = errors(cmp(name, "eq", json!(1)));
            assert_eq!(errs.len(), 1);
            assert_eq!(errs[0].0, "entry_rules.when.field");
            assert!(
                errs[0].1.starts_with(&format!("unknown field {name:?}")),
                "{errs:?}"
            );
        }
    }

    #[test]
    fn unknown_operator_is_named_at_op() {
        // The SPEC section 3 example, and the acceptance test's exact request body.
        let spec = json!({"all": [
            {"field": "score", "op": "gt", "value": 3},
            {"field": "score", "op": "greater", "value": 3},
        ]});
        assert_eq!(
            errors(spec),
            vec![(
                "entry_rules.when.all[1].op".to_owned(),
                "unknown operator \"greater\"".to_owned()
            )]
        );
        assert_eq!(
            error_paths(json!({"field": "score", "op": "greater", "value": 3})),
            ["entry_rules.when.op"]
        );
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let errs = errors(json!({
            "any": [
                {"field": "nope", "op": "eq", "value": 1},
                {"field": "score", "op": "gt", "value": "x"},
                {"not": []},
                5,
                {"all": {}},
                {"field": "score", "op": "eq", "value": 1, "extra": true},
                {"any": [{"field": "status", "op": "in", "value": ["new", "won", 3]}]},
            ],
            "typo": 1,
        }));
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "entry_rules.when.typo",
                "entry_rules.when.any[0].field",
                "entry_rules.when.any[1].value",
                "entry_rules.when.any[2].not",
                "entry_rules.when.any[3]",
                "entry_rules.when.any[4].all",
                "entry_rules.when.any[5].extra",
                "entry_rules.when.any[6].any[0].value[1]",
                "entry_rules.when.any[6].any[0].value[2]",
            ]
        );
        assert_eq!(errs[0].1, "unknown field \"typo\"");
        assert_eq!(errs[1].1, "unknown field \"nope\"");
        assert_eq!(errs[2].1, "expected a number");
        assert!(errs[3].1.starts_with("expected an object"));
        assert!(errs[4].1.starts_with("expected an object"));
        assert!(errs[5].1.starts_with("expected an array"));
        assert_eq!(errs[6].1, "unknown field \"extra\"");
        assert!(
            errs[7]
                .1
                .contains("new, contacted, qualified, converted, disqualified")
        );
        assert!(errs[8].1.starts_with("expected a lead status"));
    }

    #[test]
    fn wrong_json_types_say_what_was_expected() {
        let cases = [
            (json!([]), "entry_rules.when", "expected an object"),
            (json!("score > 3"), "entry_rules.when", "expected an object"),
            (json!(null), "entry_rules.when", "expected an object"),
            (
                json!({"all": 3}),
                "entry_rules.when.all",
                "expected an array",
            ),
            (
                json!({"any": {"field": "score"}}),
                "entry_rules.when.any",
                "expected an array",
            ),
            (
                json!({"not": [1]}),
                "entry_rules.when.not",
                "expected an object",
            ),
            (
                json!({"field": 3, "op": "eq", "value": 1}),
                "entry_rules.when.field",
                "expected a string",
            ),
            (
                json!({"field": "score", "op": ["eq"], "value": 1}),
                "entry_rules.when.op",
                "expected a string",
            ),
        ];
        for (value, path, message) in cases {
            let errs = errors(value.clone());
            assert_eq!(errs.len(), 1, "{value}: {errs:?}");
            assert_eq!(errs[0].0, path, "{value}");
            assert!(errs[0].1.starts_with(message), "{value}: {errs:?}");
        }
    }

    #[test]
    fn a_condition_has_exactly_one_shape() {
        assert_eq!(error_paths(json!({})), ["entry_rules.when"]);
        assert_eq!(
            error_paths(json!({"all": [], "any": []})),
            ["entry_rules.when"]
        );
        assert_eq!(
            error_paths(json!({"not": {"all": []}, "field": "score"})),
            ["entry_rules.when"]
        );
        assert_eq!(
            error_paths(json!({"feild": "score"})),
            ["entry_rules.when.feild", "entry_rules.when"]
        );
    }

    #[test]
    fn missing_comparison_parts_are_required() {
        assert_eq!(
            error_paths(json!({"op": "eq"})),
            ["entry_rules.when.field"],
            "the value is checked once the field is known"
        );
        assert_eq!(
            error_paths(json!({"value": 1})),
            ["entry_rules.when.field", "entry_rules.when.op"]
        );
        assert_eq!(
            error_paths(json!({"field": "score", "op": "eq"})),
            ["entry_rules.when.value"]
        );
        // `exists` reads naturally without a value: "company exists".
        assert_eq!(
            cond(json!({"field": "company", "op": "exists"})),
            Condition::Compare(Comparison {
                field: Field::Company,
                op: Op::Exists,
                value: json!(true)
            })
        );
    }

    #[test]
    fn values_must_fit_the_operator() {
        let value_errors = [
            cmp("score", "in", json!(60)),
            cmp("status", "not_in", json!("new")),
            cmp("score", "gt", json!("60")),
            cmp("score", "eq", json!(null)),
            cmp("last_reply_at", "gt", json!(5)),
            cmp("last_reply_at", "lte", json!("yesterday")),
            cmp("last_outbound_at", "eq", json!("2025-13-01T00:00:00Z")),
            cmp("company", "gte", json!(3)),
            cmp("company", "eq", json!(["Acme"])),
            cmp("attributes.seats", "gt", json!(null)),
            cmp("attributes.seats", "lt", json!([1])),
            cmp("last_reply_at", "within_days", json!(-1)),
            cmp("attributes.signup_at", "older_than_days", json!("7")),
            cmp("company", "exists", json!("yes")),
            cmp("status", "eq", json!("won")),
            cmp("status", "ne", json!(1)),
            cmp("segments", "contains", json!(1)),
            cmp("segments", "eq", json!("saas")),
            cmp("company", "contains", json!({"a": 1})),
            cmp("attributes.tags", "contains", json!(["beta"])),
            cmp("owner_id", "eq", json!("bob")),
        ];
        for value in value_errors {
            assert_eq!(
                error_paths(value.clone()),
                ["entry_rules.when.value"],
                "{value}"
            );
        }
        let status = errors(cmp("status", "eq", json!("won")));
        assert_eq!(
            status[0].1,
            "unknown value \"won\"; expected one of: new, contacted, qualified, converted, disqualified"
        );
        assert_eq!(
            error_paths(cmp("segments", "in", json!(["saas", 2]))),
            ["entry_rules.when.value[1]"]
        );
        assert_eq!(
            error_paths(cmp("score", "not_in", json!([1, "2", 3, null]))),
            ["entry_rules.when.value[1]", "entry_rules.when.value[3]"]
        );
    }

    #[test]
    fn operators_must_apply_to_the_field() {
        let op_errors = [
            cmp("score", "within_days", json!(3)),
            cmp("company", "older_than_days", json!(3)),
            cmp("status", "gt", json!("new")),
            cmp("segments", "lte", json!("a")),
            cmp("owner_id", "gt", json!(OWNER)),
            cmp("score", "contains", json!(6)),
            cmp("last_reply_at", "contains", json!("2025")),
        ];
        for value in op_errors {
            assert_eq!(
                error_paths(value.clone()),
                ["entry_rules.when.op"],
                "{value}"
            );
        }
        let errs = errors(cmp("score", "within_days", json!(3)));
        assert!(
            errs[0]
                .1
                .contains("last_reply_at, last_outbound_at or attributes.*"),
            "{errs:?}"
        );
    }

    #[test]
    fn sensible_values_are_accepted() {
        let ok = [
            cmp("status", "in", json!(["new", "qualified"])),
            cmp("status", "in", json!([])),
            cmp("score", "eq", json!(60.0)),
            cmp("score_band", "eq", json!(null)),
            cmp("company", "lt", json!("B")),
            cmp("segments", "eq", json!(["saas", "emea"])),
            cmp("segments", "contains", json!("saas")),
            cmp("email", "contains", json!("@example.com")),
            cmp("timezone", "in", json!(["Europe/Paris", null])),
            cmp("owner_id", "eq", json!(OWNER.to_uppercase())),
            cmp("last_reply_at", "eq", json!(null)),
            cmp("last_reply_at", "gte", json!("2025-06-01T00:00:00+02:00")),
            cmp("last_reply_at", "within_days", json!(0)),
            cmp("last_outbound_at", "older_than_days", json!(1.5)),
            cmp("attributes.plan", "eq", json!({"tier": "pro", "seats": 12})),
            cmp("attributes.signup_at", "gt", json!("2025-01-01T00:00:00Z")),
            cmp("attributes.seats", "gt", json!(10)),
            cmp("attributes.tags", "contains", json!(true)),
            cmp("attributes.x", "exists", json!(false)),
        ];
        for value in ok {
            cond(value);
        }
    }

    // --- evaluation ---------------------------------------------------------------------------

    #[test]
    fn eq_and_ne() {
        let l = lead();
        assert!(check("status", "eq", json!("contacted"), &l));
        assert!(check("status", "ne", json!("new"), &l));
        assert!(check("score", "eq", json!(60), &l));
        assert!(
            check("score", "eq", json!(60.0), &l),
            "numbers compare numerically"
        );
        assert!(!check("score", "eq", json!(60.5), &l));
        assert!(check("score_band", "eq", json!("warm"), &l));
        assert!(check("email", "eq", json!("Ada@example.com"), &l));
        assert!(
            check("email", "eq", json!("Ada@EXAMPLE.COM"), &l),
            "the domain is case-free"
        );
        assert!(!check("email", "eq", json!("ada@example.com"), &l));
        assert!(check("company", "eq", json!("Acme Corp"), &l));
        assert!(check("timezone", "eq", json!("Europe/Paris"), &l));
        assert!(check("owner_id", "eq", json!(OWNER), &l));
        assert!(check("owner_id", "eq", json!(OWNER.to_uppercase()), &l));
        assert!(check("segments", "eq", json!(["saas", "emea"]), &l));
        assert!(!check("segments", "eq", json!(["emea", "saas"]), &l));
        assert!(check(
            "last_outbound_at",
            "eq",
            json!(days_ago(3).to_string()),
            &l
        ));
        assert!(check("last_reply_at", "eq", json!(null), &l));
        assert!(check("attributes.plan.tier", "eq", json!("pro"), &l));
        assert!(check("attributes.plan.seats", "eq", json!(12.0), &l));
        assert!(check(
            "attributes.plan",
            "eq",
            json!({"seats": 12, "tier": "pro"}),
            &l
        ));
        assert!(check(
            "attributes.signup_at",
            "eq",
            json!("2025-06-01T11:00:00+02:00"),
            &l
        ));

        let bare = bare_lead();
        for field in [
            "company",
            "score_band",
            "timezone",
            "owner_id",
            "attributes.plan.tier",
        ] {
            let x = if field == "owner_id" {
                json!(OWNER)
            } else {
                json!("x")
            };
            assert!(
                check(field, "ne", x.clone(), &bare),
                "ne on absent {field} is true"
            );
            assert!(
                !check(field, "eq", x, &bare),
                "eq on absent {field} is false"
            );
            assert!(
                check(field, "eq", json!(null), &bare),
                "absent {field} is null"
            );
        }
        assert!(check(
            "last_outbound_at",
            "ne",
            json!(now().to_string()),
            &bare
        ));
        assert!(
            check("attributes.plan.tier.deeper", "eq", json!(null), &l),
            "through a string"
        );
    }

    #[test]
    fn in_and_not_in() {
        let l = lead();
        assert!(check("status", "in", json!(["new", "contacted"]), &l));
        assert!(!check("status", "in", json!(["new"]), &l));
        assert!(check(
            "status",
            "not_in",
            json!(["converted", "disqualified"]),
            &l
        ));
        assert!(check("score", "in", json!([50, 60.0]), &l));
        assert!(check("company", "in", json!(["Acme Corp", "Globex"]), &l));
        assert!(check("owner_id", "in", json!([OWNER]), &l));
        assert!(
            check("segments", "in", json!(["fintech", "emea"]), &l),
            "any overlap"
        );
        assert!(!check("segments", "in", json!(["fintech"]), &l));
        assert!(check("segments", "not_in", json!(["fintech"]), &l));
        assert!(check("attributes.tags", "in", json!(["vip"]), &l));
        assert!(check(
            "attributes.plan.tier",
            "in",
            json!(["pro", "enterprise"]),
            &l
        ));
        assert!(!check("status", "in", json!([]), &l));
        assert!(check("status", "not_in", json!([]), &l));
        let bare = bare_lead();
        assert!(check("company", "in", json!([null, "x"]), &bare));
        assert!(check("company", "not_in", json!(["x"]), &bare));
        assert!(check("last_reply_at", "in", json!([null]), &bare));
        assert!(!check("segments", "in", json!(["saas"]), &bare));
    }

    #[test]
    fn ordering() {
        let l = lead();
        assert!(check("score", "gt", json!(59), &l));
        assert!(!check("score", "gt", json!(60), &l));
        assert!(check("score", "gte", json!(60), &l));
        assert!(check("score", "lt", json!(60.5), &l));
        assert!(check("score", "lte", json!(60), &l));
        assert!(!check("score", "lt", json!(60), &l));
        // Times compare as instants, whatever the offset they are written in.
        let three_days = days_ago(3);
        assert!(check(
            "last_outbound_at",
            "gte",
            json!(three_days.to_string()),
            &l
        ));
        assert!(check(
            "last_outbound_at",
            "lte",
            json!(three_days.to_string()),
            &l
        ));
        assert!(check(
            "last_outbound_at",
            "lt",
            json!("2025-06-12T14:00:01+02:00"),
            &l
        ));
        assert!(check(
            "last_outbound_at",
            "gt",
            json!("2025-06-12T13:59:59+02:00"),
            &l
        ));
        // Attributes: numbers, times, and text.
        assert!(check("attributes.plan.seats", "gte", json!(12), &l));
        assert!(check(
            "attributes.signup_at",
            "lt",
            json!("2025-06-01T10:00:00+00:00"),
            &l
        ));
        assert!(check(
            "attributes.signup_at",
            "gt",
            json!("2025-06-01T10:00:00+02:00"),
            &l
        ));
        assert!(check("attributes.plan.tier", "gt", json!("basic"), &l));
        assert!(check("company", "lt", json!("B"), &l));
        assert!(check("company", "gt", json!("Acme"), &l));
        // Absent or mismatched: false both ways.
        let bare = bare_lead();
        for op in ["gt", "gte", "lt", "lte"] {
            assert!(!check("company", op, json!("M"), &bare));
            assert!(!check("last_reply_at", op, json!(now().to_string()), &bare));
            assert!(!check("attributes.plan.seats", op, json!(5), &bare));
            assert!(
                !check("attributes.plan.tier", op, json!(5), &l),
                "text vs number"
            );
            assert!(
                !check("attributes.plan.seats", op, json!("5"), &l),
                "number vs text"
            );
        }
    }

    #[test]
    fn contains_list_or_text() {
        let l = lead();
        assert!(check("segments", "contains", json!("saas"), &l));
        assert!(!check("segments", "contains", json!("fintech"), &l));
        assert!(check("company", "contains", json!("Acme"), &l));
        assert!(
            !check("company", "contains", json!("acme"), &l),
            "case-sensitive"
        );
        assert!(check("email", "contains", json!("@example.com"), &l));
        assert!(check("status", "contains", json!("tact"), &l));
        assert!(check("attributes.tags", "contains", json!("vip"), &l));
        assert!(check("attributes.plan.tier", "contains", json!("r"), &l));
        assert!(
            !check("attributes.plan", "contains", json!("tier"), &l),
            "objects hold no text"
        );
        assert!(!check("attributes.plan.seats", "contains", json!(1), &l));
        let bare = bare_lead();
        assert!(!check("company", "contains", json!(""), &bare));
        assert!(!check("attributes.tags", "contains", json!("vip"), &bare));
    }

    #[test]
    fn exists() {
        let l = lead();
        let bare = bare_lead();
        for field in [
            "company",
            "score_band",
            "timezone",
            "owner_id",
            "last_outbound_at",
        ] {
            assert!(check(field, "exists", json!(true), &l), "{field}");
            assert!(!check(field, "exists", json!(true), &bare), "{field}");
            assert!(check(field, "exists", json!(false), &bare), "{field}");
        }
        assert!(holds(json!({"field": "status", "op": "exists"}), &bare));
        assert!(check("attributes.plan.tier", "exists", json!(true), &l));
        assert!(
            !check("attributes.trial", "exists", json!(true), &l),
            "null is not present"
        );
        assert!(!check("attributes.missing", "exists", json!(true), &l));
        assert!(!check("last_reply_at", "exists", json!(true), &l));
    }

    #[test]
    fn within_and_older_than_days() {
        let l = lead(); // last outbound 3 days ago, never replied
        assert!(
            check("last_outbound_at", "within_days", json!(3), &l),
            "boundary is within"
        );
        assert!(!check("last_outbound_at", "within_days", json!(2), &l));
        assert!(check("last_outbound_at", "within_days", json!(3.5), &l));
        assert!(!check("last_outbound_at", "within_days", json!(2.9), &l));
        assert!(check("last_outbound_at", "older_than_days", json!(2), &l));
        assert!(!check("last_outbound_at", "older_than_days", json!(3), &l));
        // A missing time is "older than" anything and never "within" (SPEC section 3).
        for days in [json!(0), json!(14), json!(1_000_000), json!(0.25)] {
            assert!(check("last_reply_at", "older_than_days", days.clone(), &l));
            assert!(!check("last_reply_at", "within_days", days.clone(), &l));
            assert!(check(
                "attributes.churned_at",
                "older_than_days",
                days.clone(),
                &l
            ));
            assert!(!check("attributes.churned_at", "within_days", days, &l));
        }
        // Attributes: strings read as RFC 3339; anything else counts as missing.
        assert!(check(
            "attributes.signup_at",
            "within_days",
            json!(14.2),
            &l
        ));
        assert!(check(
            "attributes.signup_at",
            "older_than_days",
            json!(14),
            &l
        ));
        assert!(!check("attributes.signup_at", "within_days", json!(14), &l));
        assert!(check("attributes.note", "older_than_days", json!(1), &l));
        assert!(!check(
            "attributes.plan.seats",
            "within_days",
            json!(1_000_000),
            &l
        ));
        // Twelve hours ago is within half a day.
        let recent = Lead {
            last_reply_at: Some(hours_ago(12)),
            ..lead()
        };
        assert!(check("last_reply_at", "within_days", json!(0.5), &recent));
        assert!(!check(
            "last_reply_at",
            "older_than_days",
            json!(0.5),
            &recent
        ));
        assert!(check(
            "last_reply_at",
            "older_than_days",
            json!(0.4),
            &recent
        ));
    }

    #[test]
    fn combinators() {
        let l = lead();
        assert!(holds(json!({"all": []}), &l));
        assert!(!holds(json!({"any": []}), &l));
        assert!(holds(json!({"not": {"any": []}}), &l));
        let yes = cmp("status", "eq", json!("contacted"));
        let no = cmp("score", "gt", json!(99));
        assert!(holds(json!({"all": [yes, yes]}), &l));
        assert!(!holds(json!({"all": [yes, no]}), &l));
        assert!(holds(json!({"any": [no, yes]}), &l));
        assert!(!holds(json!({"any": [no, no]}), &l));
        assert!(holds(json!({"not": no}), &l));
        assert!(holds(
            json!({"all": [{"not": no}, {"any": [no, {"all": [yes]}]}]}),
            &l
        ));
    }

    // --- entry rules --------------------------------------------------------------------------

    fn entry(value: Value) -> EntryRules {
        EntryRules::parse(&value, "entry_rules").unwrap_or_else(|e| panic!("{value}: {e:?}"))
    }

    fn entry_errors(value: Value) -> Vec<(String, String)> {
        EntryRules::parse(&value, "entry_rules")
            .expect_err("should be refused")
            .into_iter()
            .map(|e| (e.path, e.message))
            .collect()
    }

    #[test]
    fn entry_rules_parse_and_round_trip() {
        assert_eq!(entry(json!({})), EntryRules::default());
        assert_eq!(entry(json!({})).to_json(), json!({}));
        let full = json!({
            "statuses": ["new", "qualified"],
            "score_bands": ["hot"],
            "segments_any": ["saas"],
            "min_score": -5,
            "no_reply_within_days": 0,
            "when": {"field": "company", "op": "exists", "value": true},
        });
        let rules = entry(full.clone());
        assert_eq!(
            rules.statuses,
            Some(vec![LeadStatus::New, LeadStatus::Qualified])
        );
        assert_eq!(rules.score_bands, Some(vec!["hot".to_owned()]));
        assert_eq!(rules.min_score, Some(-5));
        assert_eq!(rules.no_reply_within_days, Some(0));
        assert_eq!(rules.to_json(), full);
        assert_eq!(EntryRules::parse(&rules.to_json(), "e"), Ok(rules));
        // null means omitted
        assert_eq!(
            entry(json!({"statuses": null, "when": null})),
            EntryRules::default()
        );
    }

    #[test]
    fn entry_rules_report_every_error() {
        let errs = entry_errors(json!({
            "statuses": ["new", "won"],
            "score_bands": "warm",
            "segments_any": [],
            "min_score": 5.5,
            "no_reply_within_days": -1,
            "when": {"all": [{"field": "score", "op": "greater", "value": 1}]},
            "max_score": 90,
        }));
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "entry_rules.max_score",
                "entry_rules.statuses[1]",
                "entry_rules.score_bands",
                "entry_rules.segments_any",
                "entry_rules.min_score",
                "entry_rules.no_reply_within_days",
                "entry_rules.when.all[0].op",
            ]
        );
        assert_eq!(errs[0].1, "unknown field \"max_score\"");
        assert!(
            errs[1]
                .1
                .starts_with("unknown value \"won\"; expected one of: new, contacted")
        );
        assert_eq!(errs[2].1, "expected an array of strings");
        assert!(errs[3].1.starts_with("must not be empty"));
        assert_eq!(errs[4].1, "expected an integer");
        assert_eq!(errs[5].1, "expected a non-negative integer (days)");
        assert_eq!(errs[6].1, "unknown operator \"greater\"");
        assert_eq!(
            entry_errors(json!([])),
            [("entry_rules".to_owned(), "expected an object".to_owned())]
        );
        assert_eq!(
            entry_errors(json!({"statuses": [1]}))[0].0,
            "entry_rules.statuses[0]"
        );
        assert_eq!(
            entry_errors(json!({"no_reply_within_days": 5_000_000_000u64}))[0].1,
            "too large"
        );
    }

    #[test]
    fn entry_statuses_default_to_the_open_ones() {
        let rules = EntryRules::default();
        let settings = TenantSettings::default();
        for status in LeadStatus::ALL {
            let l = Lead {
                status: *status,
                ..lead()
            };
            let open = !matches!(status, LeadStatus::Converted | LeadStatus::Disqualified);
            assert_eq!(rules.matches(&l, &settings, now()), open, "{status}");
        }
        let only_new = entry(json!({"statuses": ["new"]}));
        assert!(!only_new.matches(&lead(), &settings, now()));
        assert_eq!(
            only_new.first_mismatch(&lead(), &settings, now()),
            Some("statuses")
        );
        let l = Lead {
            status: LeadStatus::New,
            ..lead()
        };
        assert!(only_new.matches(&l, &settings, now()));
    }

    #[test]
    fn entry_score_bands_default_to_the_tenants_warm_bands() {
        let rules = EntryRules::default();
        let default_settings = TenantSettings::default();
        let hot = Lead {
            score_band: Some("hot".into()),
            ..lead()
        };
        let unbanded = Lead {
            score_band: None,
            ..lead()
        };
        assert!(rules.matches(&lead(), &default_settings, now()));
        assert!(!rules.matches(&hot, &default_settings, now()));
        assert_eq!(
            rules.first_mismatch(&unbanded, &default_settings, now()),
            Some("score_bands")
        );
        // A tenant-defined band (seed: "score_band is warm (or tenant-defined)").
        let tenant = TenantSettings {
            warm_score_bands: vec!["warm".into(), "hot".into()],
            ..TenantSettings::default()
        };
        assert!(rules.matches(&hot, &tenant, now()));
        assert!(rules.matches(&lead(), &tenant, now()));
        // An explicit list overrides the tenant's.
        let only_hot = entry(json!({"score_bands": ["hot"]}));
        assert!(only_hot.matches(&hot, &default_settings, now()));
        assert!(!only_hot.matches(&lead(), &tenant, now()));
    }

    #[test]
    fn entry_reply_window_defaults_to_the_tenants() {
        let rules = EntryRules::default();
        let settings = TenantSettings::default(); // 14 days
        let replied = |days| Lead {
            last_reply_at: Some(days_ago(days)),
            last_reply_sentiment: Some(Sentiment::Neutral),
            ..lead()
        };
        assert!(rules.matches(&lead(), &settings, now()), "never replied");
        assert!(!rules.matches(&replied(10), &settings, now()));
        assert!(
            !rules.matches(&replied(14), &settings, now()),
            "exactly N days is still open"
        );
        assert!(rules.matches(&replied(15), &settings, now()));
        assert_eq!(
            rules.first_mismatch(&replied(1), &settings, now()),
            Some("no_reply_within_days")
        );
        let short = TenantSettings {
            reply_window_days: 7,
            ..TenantSettings::default()
        };
        assert!(rules.matches(&replied(10), &short, now()));
        let explicit = entry(json!({"no_reply_within_days": 30}));
        assert!(!explicit.matches(&replied(20), &short, now()));
        let zero = entry(json!({"no_reply_within_days": 0}));
        assert!(zero.matches(&replied(1), &settings, now()));
    }

    #[test]
    fn entry_min_score_segments_and_when() {
        let settings = TenantSettings::default();
        let l = lead(); // score 60, segments saas + emea
        assert!(entry(json!({"min_score": 60})).matches(&l, &settings, now()));
        assert!(!entry(json!({"min_score": 61})).matches(&l, &settings, now()));
        assert!(entry(json!({"segments_any": ["fintech", "emea"]})).matches(&l, &settings, now()));
        let fintech = entry(json!({"segments_any": ["fintech"]}));
        assert_eq!(
            fintech.first_mismatch(&l, &settings, now()),
            Some("segments_any")
        );
        let no_segments = Lead {
            segments: vec![],
            ..lead()
        };
        assert!(!entry(json!({"segments_any": ["saas"]})).matches(&no_segments, &settings, now()));
        let when =
            entry(json!({"when": {"field": "attributes.plan.tier", "op": "eq", "value": "pro"}}));
        assert!(when.matches(&l, &settings, now()));
        let free =
            entry(json!({"when": {"field": "attributes.plan.tier", "op": "eq", "value": "free"}}));
        assert_eq!(free.first_mismatch(&l, &settings, now()), Some("when"));
    }

    #[test]
    fn entry_rules_leave_safety_flags_to_the_engine() {
        let l = Lead {
            do_not_contact: true,
            unsubscribed: true,
            bounced: true,
            ..lead()
        };
        assert!(EntryRules::default().matches(&l, &TenantSettings::default(), now()));
    }

    // --- exit rules ---------------------------------------------------------------------------

    fn exit(value: Value) -> ExitRules {
        ExitRules::parse(&value, "exit_rules").unwrap_or_else(|e| panic!("{value}: {e:?}"))
    }

    #[test]
    fn exit_rules_parse_and_round_trip() {
        let default = ExitRules {
            on_reply: OnReply::Positive,
            inactivity_days: None,
            when: None,
        };
        assert_eq!(ExitRules::default(), default);
        assert_eq!(exit(json!(null)), default);
        assert_eq!(exit(json!({})), default);
        assert_eq!(default.to_json(), json!({"on_reply": "positive"}));
        let full = json!({
            "on_reply": "any",
            "inactivity_days": 10,
            "when": {"field": "status", "op": "eq", "value": "qualified"},
        });
        let rules = exit(full.clone());
        assert_eq!(rules.on_reply, OnReply::Any);
        assert_eq!(rules.inactivity_days, Some(10));
        assert_eq!(rules.to_json(), full);
        assert_eq!(ExitRules::parse(&rules.to_json(), "x"), Ok(rules));
    }

    #[test]
    fn exit_rules_report_every_error() {
        let errs: Vec<(String, String)> = ExitRules::parse(
            &json!({
                "on_reply": "all",
                "inactivity_days": 0,
                "when": {"not": {"field": "score", "op": "gt"}},
                "on_bounce": true,
            }),
            "exit_rules",
        )
        .unwrap_err()
        .into_iter()
        .map(|e| (e.path, e.message))
        .collect();
        assert_eq!(
            errs,
            [
                ("exit_rules.on_bounce", "unknown field \"on_bounce\""),
                (
                    "exit_rules.on_reply",
                    "unknown value \"all\"; expected one of: positive, any"
                ),
                (
                    "exit_rules.inactivity_days",
                    "expected a positive integer (days)"
                ),
                ("exit_rules.when.not.value", "required"),
            ]
            .map(|(p, m)| (p.to_owned(), m.to_owned()))
        );
        let not_object = ExitRules::parse(&json!("positive"), "exit_rules").unwrap_err();
        assert_eq!(not_object[0].path, "exit_rules");
        assert_eq!(
            ExitRules::parse(&json!({"on_reply": true}), "exit_rules").unwrap_err()[0].path,
            "exit_rules.on_reply"
        );
    }

    #[test]
    fn reply_exits_by_sentiment() {
        let positive = ExitRules::default();
        let any = ExitRules {
            on_reply: OnReply::Any,
            ..ExitRules::default()
        };
        for rules in [&positive, &any] {
            assert_eq!(
                rules.reply_exit(Sentiment::OutOfOffice),
                None,
                "OOO is never a reply"
            );
            assert_eq!(
                rules.reply_exit(Sentiment::Positive),
                Some("positive_reply")
            );
        }
        assert_eq!(positive.reply_exit(Sentiment::Neutral), None);
        assert_eq!(positive.reply_exit(Sentiment::Negative), None);
        assert_eq!(any.reply_exit(Sentiment::Neutral), Some("replied"));
        assert_eq!(any.reply_exit(Sentiment::Negative), Some("replied"));
    }

    #[test]
    fn check_counts_only_replies_since_enrolment() {
        let enrolled = days_ago(5);
        let replied = |days, sentiment| Lead {
            last_reply_at: Some(days_ago(days)),
            last_reply_sentiment: Some(sentiment),
            last_engaged_at: Some(days_ago(days)),
            ..lead()
        };
        let positive = ExitRules::default();
        let any = ExitRules {
            on_reply: OnReply::Any,
            ..ExitRules::default()
        };
        assert_eq!(positive.check(&lead(), enrolled, now()), None);
        assert_eq!(
            positive.check(&replied(2, Sentiment::Positive), enrolled, now()),
            Some("positive_reply")
        );
        assert_eq!(
            positive.check(&replied(5, Sentiment::Positive), enrolled, now()),
            Some("positive_reply")
        );
        assert_eq!(
            positive.check(&replied(6, Sentiment::Positive), enrolled, now()),
            None,
            "before enrolment"
        );
        assert_eq!(
            positive.check(&replied(2, Sentiment::Negative), enrolled, now()),
            None
        );
        assert_eq!(
            any.check(&replied(2, Sentiment::Negative), enrolled, now()),
            Some("replied")
        );
        assert_eq!(
            any.check(&replied(2, Sentiment::Neutral), enrolled, now()),
            Some("replied")
        );
        let unknown_sentiment = Lead {
            last_reply_sentiment: None,
            ..replied(2, Sentiment::Positive)
        };
        assert_eq!(positive.check(&unknown_sentiment, enrolled, now()), None);
        assert_eq!(
            any.check(&unknown_sentiment, enrolled, now()),
            Some("replied")
        );
    }

    #[test]
    fn out_of_office_never_exits_nor_blocks_entry() {
        // An out-of-office is never written to last_reply_at; even were it, it would not count.
        let ooo = Lead {
            last_reply_at: Some(days_ago(1)),
            last_reply_sentiment: Some(Sentiment::OutOfOffice),
            ..lead()
        };
        let any = ExitRules {
            on_reply: OnReply::Any,
            ..ExitRules::default()
        };
        assert_eq!(any.check(&ooo, days_ago(5), now()), None);
        assert_eq!(ExitRules::default().check(&ooo, days_ago(5), now()), None);
        assert!(EntryRules::default().matches(&lead(), &TenantSettings::default(), now()));
    }

    #[test]
    fn check_inactivity() {
        let rules = exit(json!({"inactivity_days": 7}));
        assert_eq!(rules.check(&lead(), days_ago(6), now()), None);
        assert_eq!(
            rules.check(&lead(), days_ago(7), now()),
            Some("inactive"),
            "exactly N days"
        );
        assert_eq!(rules.check(&lead(), days_ago(10), now()), Some("inactive"));
        let engaged = |days| Lead {
            last_engaged_at: Some(days_ago(days)),
            ..lead()
        };
        assert_eq!(rules.check(&engaged(3), days_ago(10), now()), None);
        assert_eq!(
            rules.check(&engaged(8), days_ago(10), now()),
            Some("inactive")
        );
        // Engagement before enrolment does not extend it.
        assert_eq!(
            rules.check(&engaged(20), days_ago(7), now()),
            Some("inactive")
        );
        assert_eq!(
            ExitRules::default().check(&lead(), days_ago(365), now()),
            None
        );
    }

    #[test]
    fn check_when_and_order() {
        let rules = exit(json!({
            "on_reply": "any",
            "inactivity_days": 7,
            "when": {"field": "score", "op": "lt", "value": 70},
        }));
        let enrolled = days_ago(10);
        let replied = Lead {
            last_reply_at: Some(days_ago(8)),
            last_reply_sentiment: Some(Sentiment::Negative),
            last_engaged_at: Some(days_ago(8)),
            ..lead()
        };
        assert_eq!(
            rules.check(&replied, enrolled, now()),
            Some("replied"),
            "reply first"
        );
        assert_eq!(
            rules.check(&lead(), enrolled, now()),
            Some("inactive"),
            "then inactivity"
        );
        assert_eq!(
            rules.check(&lead(), days_ago(1), now()),
            Some("exit_rule"),
            "then when"
        );
        let high = Lead {
            score: 90,
            ..lead()
        };
        assert_eq!(rules.check(&high, days_ago(1), now()), None);
    }

    // --- serde --------------------------------------------------------------------------------

    #[test]
    fn serde_goes_through_parse() {
        let rules = entry(
            json!({"statuses": ["new"], "when": {"any": [{"field": "score", "op": "gt", "value": 3}]}}),
        );
        let value = serde_json::to_value(&rules).unwrap();
        assert_eq!(value, rules.to_json());
        assert_eq!(serde_json::from_value::<EntryRules>(value).unwrap(), rules);
        let exit_rules = ExitRules {
            inactivity_days: Some(3),
            ..ExitRules::default()
        };
        let back: ExitRules =
            serde_json::from_value(serde_json::to_value(&exit_rules).unwrap()).unwrap();
        assert_eq!(back, exit_rules);
        let err = serde_json::from_value::<Condition>(
            json!({"all": [{"field": "score", "op": "greater", "value": 1}]}),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, "all[0].op: unknown operator \"greater\"");
        let err = serde_json::from_value::<Condition>(json!(3))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("expected an object"), "{err}");
    }

    // --- properties ---------------------------------------------------------------------------

    fn pick<T: Clone + fmt::Debug + 'static>(items: &[T]) -> impl Strategy<Value = T> + use<T> {
        prop::sample::select(items.to_vec())
    }

    fn status_value() -> impl Strategy<Value = Value> {
        pick(LeadStatus::ALL).prop_map(|s| Value::from(s.as_str()))
    }

    fn number_value() -> BoxedStrategy<Value> {
        prop_oneof![
            (-10i64..110).prop_map(Value::from),
            (-10.0f64..110.0).prop_map(Value::from)
        ]
        .boxed()
    }

    fn text_value() -> BoxedStrategy<Value> {
        pick(&[
            "warm",
            "hot",
            "Acme",
            "Acme Corp",
            "Ada@example.com",
            "saas",
            "emea",
            "pro",
            "",
            "vip",
        ])
        .prop_map(Value::from)
        .boxed()
    }

    fn time_value() -> BoxedStrategy<Value> {
        (-40i64 * 24..40 * 24)
            .prop_map(|h| Value::from(hours_ago(h).to_string()))
            .boxed()
    }

    fn days_value() -> BoxedStrategy<Value> {
        prop_oneof![
            (0u32..40).prop_map(Value::from),
            (0.0f64..40.0).prop_map(Value::from)
        ]
        .boxed()
    }

    fn uuid_value() -> BoxedStrategy<Value> {
        pick(&[OWNER, "0190b5a2-7c4e-7d3a-9f00-000000000002"])
            .prop_map(Value::from)
            .boxed()
    }

    fn scalar_value() -> BoxedStrategy<Value> {
        prop_oneof![
            number_value(),
            text_value(),
            time_value(),
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
        ]
        .boxed()
    }

    fn list_of(values: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
        prop::collection::vec(values, 0..4)
            .prop_map(Value::Array)
            .boxed()
    }

    /// An operator and a value that parsing accepts for a field of this kind.
    fn op_and_value(kind: Kind) -> BoxedStrategy<(Op, Value)> {
        let eq_ne = || pick(&[Op::Eq, Op::Ne]);
        let ordering = || pick(&[Op::Gt, Op::Gte, Op::Lt, Op::Lte]);
        let membership = || pick(&[Op::In, Op::NotIn]);
        let days = || pick(&[Op::WithinDays, Op::OlderThanDays]);
        let exists = || any::<bool>().prop_map(|b| (Op::Exists, Value::Bool(b)));
        let contains = |v: BoxedStrategy<Value>| v.prop_map(|v| (Op::Contains, v));
        let or_null = |v: BoxedStrategy<Value>| prop_oneof![v, Just(Value::Null)].boxed();
        match kind {
            Kind::Status => prop_oneof![
                (eq_ne(), status_value()),
                (membership(), list_of(status_value().boxed())),
                contains(text_value()),
                exists(),
            ]
            .boxed(),
            Kind::Number => prop_oneof![
                (eq_ne(), number_value()),
                (ordering(), number_value()),
                (membership(), list_of(number_value())),
                exists(),
            ]
            .boxed(),
            Kind::Text => prop_oneof![
                (eq_ne(), or_null(text_value())),
                (ordering(), text_value()),
                (membership(), list_of(or_null(text_value()))),
                contains(text_value()),
                exists(),
            ]
            .boxed(),
            Kind::Id => prop_oneof![
                (eq_ne(), or_null(uuid_value())),
                (membership(), list_of(uuid_value())),
                contains(text_value()),
                exists(),
            ]
            .boxed(),
            Kind::List => prop_oneof![
                (eq_ne(), list_of(text_value())),
                (membership(), list_of(text_value())),
                contains(text_value()),
                exists(),
            ]
            .boxed(),
            Kind::Time => prop_oneof![
                (eq_ne(), or_null(time_value())),
                (ordering(), time_value()),
                (membership(), list_of(or_null(time_value()))),
                (days(), days_value()),
                exists(),
            ]
            .boxed(),
            Kind::Json => prop_oneof![
                (eq_ne(), prop_oneof![scalar_value(), list_of(text_value())]),
                (
                    ordering(),
                    prop_oneof![number_value(), text_value(), time_value()]
                ),
                (membership(), list_of(scalar_value())),
                contains(prop_oneof![number_value(), text_value()].boxed()),
                (days(), days_value()),
                exists(),
            ]
            .boxed(),
        }
    }

    fn arb_field() -> impl Strategy<Value = Field> {
        let named: Vec<Field> = NAMED_FIELDS.iter().map(|(_, f)| f.clone()).collect();
        let attributes = pick(&[
            "plan.tier",
            "plan.seats",
            "signup_at",
            "tags",
            "trial",
            "missing.deep",
        ])
        .prop_map(|p| Field::Attribute(p.split('.').map(str::to_owned).collect()));
        prop_oneof![prop::sample::select(named), attributes]
    }

    fn arb_comparison() -> impl Strategy<Value = Comparison> {
        arb_field()
            .prop_flat_map(|field| {
                let kind = field.kind();
                (Just(field), op_and_value(kind))
            })
            .prop_map(|(field, (op, value))| Comparison { field, op, value })
    }

    fn arb_condition() -> impl Strategy<Value = Condition> {
        arb_comparison()
            .prop_map(Condition::Compare)
            .prop_recursive(4, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Condition::All),
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Condition::Any),
                    inner.prop_map(|c| Condition::Not(Box::new(c))),
                ]
            })
    }

    fn arb_time() -> impl Strategy<Value = Option<Timestamp>> {
        prop::option::of((-40i64 * 24..40 * 24).prop_map(hours_ago))
    }

    fn arb_lead() -> impl Strategy<Value = Lead> {
        let base = (
            pick(LeadStatus::ALL),
            -10i64..110,
            prop::option::of(pick(&["warm", "hot", "cold"])),
            prop::sample::subsequence(vec!["saas", "emea", "vip"], 0..=3),
            prop::option::of(pick(&["Acme", "Acme Corp", "Globex"])),
            prop::option::of(pick(&[OWNER, "0190b5a2-7c4e-7d3a-9f00-000000000002"])),
        );
        let times = (arb_time(), arb_time());
        let attributes = (
            prop::option::of(pick(&["pro", "free"])),
            prop::option::of(-5i64..50),
            arb_time(),
            prop::sample::subsequence(vec!["beta", "vip"], 0..=2),
            prop::option::of(any::<bool>()),
        );
        (base, times, attributes).prop_map(
            |((status, score, band, segments, company, owner), (reply, outbound), attrs)| {
                let (tier, seats, signup, tags, trial) = attrs;
                let mut plan = Map::new();
                if let Some(tier) = tier {
                    plan.insert("tier".into(), Value::from(tier));
                }
                if let Some(seats) = seats {
                    plan.insert("seats".into(), Value::from(seats));
                }
                let mut attributes = Map::new();
                attributes.insert("plan".into(), Value::Object(plan));
                if let Some(at) = signup {
                    attributes.insert("signup_at".into(), Value::from(at.to_string()));
                }
                attributes.insert("tags".into(), Value::from(tags));
                attributes.insert("trial".into(), trial.map_or(Value::Null, Value::Bool));
                Lead {
                    status,
                    score,
                    score_band: band.map(str::to_owned),
                    segments: segments.into_iter().map(str::to_owned).collect(),
                    company: company.map(str::to_owned),
                    owner_id: owner.map(|o| uuid::Uuid::parse_str(o).unwrap()),
                    last_reply_at: reply,
                    last_reply_sentiment: reply.map(|_| Sentiment::Neutral),
                    last_outbound_at: outbound,
                    attributes,
                    ..lead()
                }
            },
        )
    }

    /// Any JSON, biased toward things that look like conditions, to fuzz the parser.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..100).prop_map(Value::from),
            (-5.0f64..100.0).prop_map(Value::from),
            pick(&[
                "score",
                "status",
                "segments",
                "attributes.plan.tier",
                "attributes.",
                "last_reply_at",
                "eq",
                "gt",
                "in",
                "within_days",
                "exists",
                "contains",
                "greater",
                "new",
                "warm",
                "2025-06-01T00:00:00Z",
                "",
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            let key = pick(&["all", "any", "not", "field", "op", "value", "x"]);
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..4).prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    fn not(c: Condition) -> Condition {
        Condition::Not(Box::new(c))
    }

    proptest! {
        #[test]
        fn double_negation(c in arb_condition(), l in arb_lead()) {
            prop_assert_eq!(not(not(c.clone())).eval(&l, now()), c.eval(&l, now()));
        }

        #[test]
        fn empty_all_and_any(l in arb_lead()) {
            prop_assert!(Condition::All(vec![]).eval(&l, now()));
            prop_assert!(!Condition::Any(vec![]).eval(&l, now()));
        }

        #[test]
        fn singletons_are_the_condition(c in arb_condition(), l in arb_lead()) {
            prop_assert_eq!(Condition::All(vec![c.clone()]).eval(&l, now()), c.eval(&l, now()));
            prop_assert_eq!(Condition::Any(vec![c.clone()]).eval(&l, now()), c.eval(&l, now()));
        }

        #[test]
        fn de_morgan(a in arb_condition(), b in arb_condition(), l in arb_lead()) {
            let both = Condition::All(vec![a.clone(), b.clone()]);
            let either = Condition::Any(vec![a.clone(), b.clone()]);
            prop_assert_eq!(
                not(both).eval(&l, now()),
                Condition::Any(vec![not(a.clone()), not(b.clone())]).eval(&l, now())
            );
            prop_assert_eq!(
                not(either).eval(&l, now()),
                Condition::All(vec![not(a), not(b)]).eval(&l, now())
            );
        }

        #[test]
        fn negated_operators_are_exact_complements(c in arb_comparison(), l in arb_lead()) {
            let flipped = match c.op {
                Op::Eq => Op::Ne,
                Op::Ne => Op::Eq,
                Op::In => Op::NotIn,
                Op::NotIn => Op::In,
                _ => return Ok(()),
            };
            let other = Comparison { op: flipped, ..c.clone() };
            prop_assert_ne!(c.eval(&l, now()), other.eval(&l, now()));
        }

        #[test]
        fn parse_round_trips(c in arb_condition()) {
            prop_assert_eq!(Condition::parse(&c.to_json(), "c"), Ok(c));
        }

        #[test]
        fn missing_times_are_older_than_anything(
            days in prop_oneof![(0u32..100_000).prop_map(Value::from), (0.0f64..1e9).prop_map(Value::from)],
            field in pick(&["last_reply_at", "last_outbound_at", "attributes.churned_at"]),
        ) {
            let l = bare_lead();
            let older = cond(cmp(field, "older_than_days", days.clone()));
            let within = cond(cmp(field, "within_days", days));
            prop_assert!(older.eval(&l, now()));
            prop_assert!(!within.eval(&l, now()));
        }

        #[test]
        fn parsing_any_json_never_panics(v in arb_json()) {
            match Condition::parse(&v, "r") {
                Ok(c) => prop_assert_eq!(Condition::parse(&c.to_json(), "r"), Ok(c)),
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    prop_assert!(errors.iter().all(|e| e.path.starts_with('r')));
                }
            }
        }

        #[test]
        fn entry_rules_round_trip(
            statuses in prop::option::of(prop::sample::subsequence(LeadStatus::ALL.to_vec(), 1..=5)),
            bands in prop::option::of(prop::collection::vec("[a-z]{1,6}", 1..3)),
            segments in prop::option::of(prop::collection::vec("[a-z]{1,6}", 1..3)),
            min_score in prop::option::of(any::<i64>()),
            days in prop::option::of(any::<u32>()),
            when in prop::option::of(arb_condition()),
        ) {
            let rules = EntryRules {
                statuses,
                score_bands: bands,
                segments_any: segments,
                min_score,
                no_reply_within_days: days,
                when,
            };
            prop_assert_eq!(EntryRules::parse(&rules.to_json(), "entry_rules"), Ok(rules));
        }
    }
}
