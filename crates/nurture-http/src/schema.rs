//! OpenAPI schemas for the core's types: its closed text enums, built from the enums' own `ALL`
//! lists so the documented values cannot drift from what the engine accepts, and the rule
//! grammar of SPEC section 3 (issue #3). The core knows nothing of OpenAPI (its architecture
//! invariant), so the edge describes its types here.

use nurture_core::domain::*;
use nurture_core::rules::{OnReply, Op};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ArrayItems, Object, ObjectBuilder, OneOfBuilder, Schema,
    SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};

fn enum_object<'a>(values: impl Iterator<Item = &'a str>, nullable: bool) -> Object {
    let mut values: Vec<serde_json::Value> = values.map(serde_json::Value::from).collect();
    let schema_type = if nullable {
        values.push(serde_json::Value::Null);
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(schema_type)
        .enum_values(Some(values))
        .build()
}

/// Declares `fn name() -> Object` documenting the values of a core text enum.
macro_rules! enum_schema {
    ($($name:ident => $ty:ident $(, $nullable:literal)?;)*) => {$(
        pub(crate) fn $name() -> Object {
            enum_object($ty::ALL.iter().map(|v| v.as_str()), false $(|| $nullable)?)
        }
    )*};
}

enum_schema! {
    lead_status => LeadStatus;
    sequence_status => SequenceStatus;
    channel => Channel;
    enrollment_status => EnrollmentStatus;
    enrollment_source => EnrollmentSource;
    pause_reason_nullable => PauseReason, true;
    approval_status => ApprovalStatus;
    approval_author => ApprovalAuthor;
    task_status => TaskStatus;
    message_status => MessageStatus;
    sentiment => Sentiment;
    sentiment_nullable => Sentiment, true;
    activity_type => ActivityType;
}

// -- rules (SPEC section 3) ----------------------------------------------------------------------
//
// Rules are parsed by the core's hand-written parsers (for their all-errors-with-paths
// messages), so there is no Rust type to derive a schema from. These schemas state the same
// grammar; the operators come from the core's own list.

/// Component names of the rule and time zone schemas.
pub(crate) const TIME_ZONE: &str = "TimeZone";
pub(crate) const CONDITION: &str = "Condition";
pub(crate) const ENTRY_RULES: &str = "EntryRules";
pub(crate) const EXIT_RULES: &str = "ExitRules";

/// The fields a comparison may read: the named ones, or `attributes.<key>[.<key>...]`.
const FIELD_PATTERN: &str = r"^(status|score|score_band|segments|email|company|timezone|owner_id|last_reply_at|last_outbound_at|attributes(\.[^.]+)+)$";

fn closed(builder: ObjectBuilder) -> ObjectBuilder {
    builder.additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
}

fn condition_ref() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(CONDITION))
}

fn list_of(item: impl Into<RefOr<Schema>>) -> RefOr<Schema> {
    ArrayBuilder::new()
        .items(ArrayItems::RefOrSchema(Box::new(item.into())))
        .into()
}

fn one_key(key: &str, value: impl Into<RefOr<Schema>>) -> Object {
    closed(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(key, value)
            .required(key),
    )
    .build()
}

fn integer(minimum: Option<i64>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(minimum)
        .build()
}

/// A rule key may also be null, which the core's parsers read as "left out".
fn or_null(schema: impl Into<RefOr<Schema>>) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(schema)
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

/// The IANA zone names the engine accepts: those of jiff's time zone database, which is what
/// `TimeZoneName::parse` looks them up in.
fn time_zone() -> Schema {
    let mut names: Vec<String> = jiff::tz::db()
        .available()
        .map(|n| n.as_str().to_string())
        .collect();
    names.sort();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("An IANA time zone name, e.g. `Europe/Paris`"))
        .enum_values(Some(names))
        .build()
        .into()
}

fn strings() -> RefOr<Schema> {
    list_of(ObjectBuilder::new().schema_type(Type::String).build())
}

/// `{"all": [C]}`, `{"any": [C]}`, `{"not": C}` or `{"field", "op", "value"}`.
fn condition() -> Schema {
    let compare = closed(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "field",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(FIELD_PATTERN)),
            )
            .required("field")
            .property("op", enum_object(Op::ALL.iter().map(|o| o.as_str()), false))
            .required("op")
            .property(
                "value",
                ObjectBuilder::new().description(Some("Any JSON value that fits the field and op")),
            ),
    )
    .build();
    OneOfBuilder::new()
        .description(Some("A condition over one lead (SPEC section 3)"))
        .item(one_key("all", list_of(condition_ref())))
        .item(one_key("any", list_of(condition_ref())))
        .item(one_key("not", condition_ref()))
        .item(compare)
        .build()
        .into()
}

fn entry_rules() -> Schema {
    closed(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "When a lead is enrolled automatically; every key is optional (SPEC section 3)",
            ))
            .property("statuses", or_null(list_of(lead_status())))
            .property("score_bands", or_null(strings()))
            .property("segments_any", or_null(strings()))
            .property("min_score", or_null(integer(None)))
            .property("no_reply_within_days", or_null(integer(Some(0))))
            .property("when", or_null(condition_ref())),
    )
    .build()
    .into()
}

fn exit_rules() -> Schema {
    closed(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "When an enrollment ends early by the sequence's rules (SPEC section 3)",
            ))
            .property(
                "on_reply",
                or_null(enum_object(OnReply::ALL.iter().map(|o| o.as_str()), false)),
            )
            .property("inactivity_days", or_null(integer(Some(1))))
            .property("when", or_null(condition_ref())),
    )
    .build()
    .into()
}

/// The rule and time zone schemas, for the document's components.
pub(crate) fn components() -> Vec<(&'static str, Schema)> {
    vec![
        (TIME_ZONE, time_zone()),
        (CONDITION, condition()),
        (ENTRY_RULES, entry_rules()),
        (EXIT_RULES, exit_rules()),
    ]
}

/// A time zone name.
pub(crate) fn time_zone_ref() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(TIME_ZONE))
}

/// A time zone name, or null for the tenant's zone.
pub(crate) fn time_zone_nullable() -> RefOr<Schema> {
    nullable_ref(TIME_ZONE)
}

fn nullable_ref(name: &str) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(Ref::from_schema_name(name))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

/// A step's `conditions`: a condition, or null.
pub(crate) fn condition_nullable() -> RefOr<Schema> {
    nullable_ref(CONDITION)
}

/// `entry_rules`: the rules, or null for manual enrollment only.
pub(crate) fn entry_rules_nullable() -> RefOr<Schema> {
    nullable_ref(ENTRY_RULES)
}

/// `exit_rules` as answered: always an object.
pub(crate) fn exit_rules_ref() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(EXIT_RULES))
}

/// `exit_rules` as written: the rules, or null for the defaults.
pub(crate) fn exit_rules_nullable() -> RefOr<Schema> {
    nullable_ref(EXIT_RULES)
}
