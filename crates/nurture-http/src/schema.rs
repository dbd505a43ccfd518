//! OpenAPI schemas for the core's closed text enums, built from the enums' own `ALL` lists so
//! the documented values cannot drift from what the engine accepts (issue #3). The core knows
//! nothing of OpenAPI (its architecture invariant), so the edge describes its types here.

use nurture_core::domain::*;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

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
    sentiment_nullable => Sentiment, true;
    activity_type => ActivityType;
}
