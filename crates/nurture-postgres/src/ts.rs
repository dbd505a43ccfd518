//! Instants at the boundary: `jiff::Timestamp` as PostgreSQL `timestamptz`, exactly.
//!
//! sqlx has no jiff 1.x support (and jiff-sqlx targets jiff 0.2, STYLE.md), so [`Ts`] encodes
//! the value itself in PostgreSQL's binary format: a `timestamptz` on the wire is an int8 of
//! microseconds since 2000-01-01 00:00:00 UTC. Integer microseconds both ways means no float
//! (`to_timestamp(float8)`), no text parsing and no session time zone on the way: a round trip
//! is exact to the microsecond, which is also the precision of the engine's clock and of the
//! SQLite backend (`as_microsecond`, truncating sub-microsecond digits the same way).

use jiff::Timestamp;
use sqlx::decode::Decode;
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{
    PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueFormat, PgValueRef, Postgres,
};
use sqlx::types::Type;

/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
/// Built-in type OIDs (stable across servers: pg_type.dat).
const TIMESTAMPTZ: Oid = Oid(1184);
const TIMESTAMPTZ_ARRAY: Oid = Oid(1185);

/// A `timestamptz` column or parameter holding a `jiff::Timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ts(pub Timestamp);

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(TIMESTAMPTZ)
    }
}

impl PgHasArrayType for Ts {
    fn array_type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(TIMESTAMPTZ_ARRAY)
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        // jiff's range (years -9999..=9999) is well inside i64 microseconds, so this cannot
        // overflow; the check keeps that an error rather than an assumption.
        let micros = self
            .0
            .as_microsecond()
            .checked_sub(PG_EPOCH_UNIX_MICROS)
            .ok_or_else(|| format!("{} is out of range for timestamptz", self.0))?;
        Encode::<Postgres>::encode_by_ref(&micros, buf)
    }

    fn size_hint(&self) -> usize {
        std::mem::size_of::<i64>()
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => {
                let micros: i64 = Decode::<Postgres>::decode(value)?;
                if micros == i64::MAX || micros == i64::MIN {
                    return Err("timestamptz 'infinity' has no instant".into());
                }
                let unix = micros
                    .checked_add(PG_EPOCH_UNIX_MICROS)
                    .ok_or("timestamptz out of range for an instant")?;
                Ok(Ts(Timestamp::from_microsecond(unix)?))
            }
            // Only the simple-query protocol (`raw_sql`) sends text: ISO style,
            // `2026-01-05 09:00:00.123456+00`, in the session's time zone.
            PgValueFormat::Text => {
                let s = value.as_str()?;
                Ok(Ts(s
                    .parse::<Timestamp>()
                    .map_err(|e| format!("timestamptz {s:?}: {e}"))?))
            }
        }
    }
}
