//! When an email step may send (SPEC section 4 "Step execution" item 3): the tenant's optional
//! sending window, in the lead's own time zone, and the per-lead contact frequency cap.
//!
//! Both answer the same question, "what is the earliest instant at or after now when this is
//! allowed?", so a step that may not send now is deferred to exactly that instant rather than
//! polled. [`earliest_send`] combines them and says which one caused the deferral, for the
//! `nurture_step_scheduled` activity's `reason`.

use std::fmt;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::domain::ParseError;

/// Days and hours when email may go out, in the lead's own time zone.
///
/// The window is half-open on the wall clock: a lead's local time `t` on an allowed day is inside
/// when `start <= t < end`, so "09:00"–"17:00" lets a message go at 09:00 but not at 17:00, and
/// two back-to-back windows never overlap. An `end` of "24:00" means "until midnight" (a
/// 00:00–24:00 window is the whole day), which an exclusive `end` could not otherwise express.
///
/// Times are whole minutes because the stored and API form is `"HH:MM"`; allowing seconds would
/// make a value that does not survive its own round trip.
///
/// Serialized as `{"days": ["mon", "tue", ...], "start": "HH:MM", "end": "HH:MM"}` (days in
/// Monday-first order, without duplicates). Anything else is a deserialization error whose
/// message names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawWindow", into = "RawWindow")]
pub struct SendingWindow {
    /// The set of allowed weekdays, bit `n` for [`Weekday::to_monday_zero_offset`] `n`. A bit set
    /// because `Weekday` is not `Ord` (no `BTreeSet`), and this one is `Copy`, allocation-free and
    /// equal to any other holding the same days, whatever order they were given in.
    days: u8,
    start: Time,
    /// `Time::MAX` stands for "24:00" (end of day, inclusive of the last instant).
    end: Time,
}

/// The days in the order they are written out.
const WEEK: [(Weekday, &str); 7] = [
    (Weekday::Monday, "mon"),
    (Weekday::Tuesday, "tue"),
    (Weekday::Wednesday, "wed"),
    (Weekday::Thursday, "thu"),
    (Weekday::Friday, "fri"),
    (Weekday::Saturday, "sat"),
    (Weekday::Sunday, "sun"),
];

/// How many steps [`SendingWindow::next_open`] takes before giving up. Each step either lands
/// inside the window or crosses a time-zone transition, and the window opens within eight days of
/// civil time, so real zones (a couple of transitions a year) need at most a handful.
const MAX_SEARCH_STEPS: usize = 64;

fn day_bit(day: Weekday) -> u8 {
    1 << day.to_monday_zero_offset()
}

impl SendingWindow {
    /// A window open on `days` from `start` (inclusive) to `end` (exclusive; `Time::MAX` means
    /// until midnight). Needs at least one day and `start < end`, because an empty window would
    /// defer every email forever; `start` and `end` must be whole minutes (see the type's docs).
    /// Duplicate days are harmless and ignored.
    pub fn new(days: &[Weekday], start: Time, end: Time) -> Result<Self, ParseError> {
        if days.is_empty() {
            return Err(ParseError(
                "sending window needs at least one day (mon, tue, wed, thu, fri, sat, sun)".into(),
            ));
        }
        if !is_whole_minute(start) {
            return Err(ParseError(format!(
                "sending window start {start} must be a whole minute (HH:MM)"
            )));
        }
        if !(is_whole_minute(end) || end == Time::MAX) {
            return Err(ParseError(format!(
                "sending window end {end} must be a whole minute (HH:MM)"
            )));
        }
        if start >= end {
            return Err(ParseError(format!(
                "sending window start {} must be before end {}",
                format_hhmm(start),
                format_end(end)
            )));
        }
        let days = days.iter().fold(0u8, |acc, &d| acc | day_bit(d));
        Ok(SendingWindow { days, start, end })
    }

    /// The allowed days, Monday first.
    pub fn days(&self) -> Vec<Weekday> {
        WEEK.iter()
            .map(|&(d, _)| d)
            .filter(|&d| self.allows_day(d))
            .collect()
    }

    pub fn start(&self) -> Time {
        self.start
    }

    /// The exclusive end; `Time::MAX` means "24:00".
    pub fn end(&self) -> Time {
        self.end
    }

    fn allows_day(&self, day: Weekday) -> bool {
        self.days & day_bit(day) != 0
    }

    /// Whether a lead whose wall clock reads `local` may be emailed.
    fn contains_local(&self, local: DateTime) -> bool {
        let t = local.time();
        self.allows_day(local.weekday())
            && self.start <= t
            && (t < self.end || self.end == Time::MAX)
    }

    /// Whether `at` falls inside the window on the wall clock of zone `tz`.
    ///
    /// Defined purely by the local wall-clock reading, so on a fall-back day a wall-clock hour
    /// that happens twice is inside (or outside) both times, and on a spring-forward day the
    /// skipped hour simply never occurs.
    pub fn contains(&self, at: Timestamp, tz: &TimeZone) -> bool {
        self.contains_local(tz.to_datetime(at))
    }

    /// The earliest instant `>= at` inside the window, in zone `tz`.
    ///
    /// "Earliest" is meant literally, which settles the daylight-saving cases:
    /// - a start time in a spring-forward gap (02:30 on a day when 02:00 jumps to 03:00) resolves
    ///   to the first instant after the gap (03:00 new time), since that is the first moment the
    ///   lead's clock reads at least 02:30;
    /// - an ambiguous fall-back start (01:30 on a day when 02:00 goes back to 01:00) resolves to
    ///   the earlier of the two 01:30s, unless `at` is already past it, in which case the second
    ///   01:30 is the next opening.
    ///
    /// Between two transitions of `tz` the offset is fixed, so the wall clock advances with real
    /// time and the window can only open where the clock reaches `start` on an allowed day. A
    /// transition can also open it (the clock jumps over `start`, or back into the window). So
    /// the search walks forward from `at`, each step to whichever comes first, the next `start`
    /// crossing under the current offset or the next transition, and stops at the first instant
    /// inside. Each step moves strictly forward, so the search cannot loop.
    ///
    /// Returns `Timestamp::MAX` only if no opening is representable (a search starting within a
    /// week of the end of jiff's range).
    pub fn next_open(&self, at: Timestamp, tz: &TimeZone) -> Timestamp {
        let mut t = at;
        for _ in 0..MAX_SEARCH_STEPS {
            let offset = tz.to_offset(t);
            let local = offset.to_datetime(t);
            if self.contains_local(local) {
                return t;
            }
            let crossing = self
                .next_start_after(local)
                .and_then(|dt| offset.to_timestamp(dt).ok());
            let transition = tz
                .following(t)
                .next()
                .map(|tr| tr.timestamp())
                .filter(|&tr| tr > t);
            t = match (crossing, transition) {
                (Some(c), Some(tr)) => c.min(tr),
                (Some(c), None) => c,
                (None, Some(tr)) => tr,
                (None, None) => return Timestamp::MAX,
            };
        }
        Timestamp::MAX
    }

    /// The first civil datetime strictly after `local` at which the window starts on an allowed
    /// day. `None` only at the end of jiff's calendar.
    fn next_start_after(&self, local: DateTime) -> Option<DateTime> {
        let mut day: Date = if local.time() < self.start {
            local.date()
        } else {
            local.date().tomorrow().ok()?
        };
        for _ in 0..7 {
            if self.allows_day(day.weekday()) {
                return Some(day.to_datetime(self.start));
            }
            day = day.tomorrow().ok()?;
        }
        None // unreachable: `days` is never empty
    }
}

fn is_whole_minute(t: Time) -> bool {
    t.second() == 0 && t.subsec_nanosecond() == 0
}

fn format_hhmm(t: Time) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

fn format_end(t: Time) -> String {
    if t == Time::MAX {
        "24:00".into()
    } else {
        format_hhmm(t)
    }
}

/// Parse a strict `"HH:MM"` (two digits each). `"24:00"` is accepted only when `allow_24` (the
/// end of a window) and becomes `Time::MAX`.
fn parse_hhmm(field: &str, raw: &str, allow_24: bool) -> Result<Time, ParseError> {
    let err = || {
        let range = if allow_24 {
            "00:00 to 24:00"
        } else {
            "00:00 to 23:59"
        };
        ParseError(format!(
            "sending window {field} {raw:?} is not a time of day; expected HH:MM from {range}"
        ))
    };
    let b = raw.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![b[0], b[1], b[3], b[4]].iter().all(u8::is_ascii_digit) {
        return Err(err());
    }
    let hour = i8::try_from((b[0] - b'0') * 10 + (b[1] - b'0')).map_err(|_| err())?;
    let minute = i8::try_from((b[3] - b'0') * 10 + (b[4] - b'0')).map_err(|_| err())?;
    if allow_24 && hour == 24 && minute == 0 {
        return Ok(Time::MAX);
    }
    Time::new(hour, minute, 0, 0).map_err(|_| err())
}

fn parse_day(raw: &str) -> Result<Weekday, ParseError> {
    WEEK.iter()
        .find(|&&(_, name)| name == raw)
        .map(|&(d, _)| d)
        .ok_or_else(|| {
            ParseError(format!(
                "unknown day {raw:?} in sending window; expected one of: mon, tue, wed, thu, fri, sat, sun"
            ))
        })
}

/// The wire form of [`SendingWindow`]; conversion checks it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    days: Vec<String>,
    start: String,
    end: String,
}

impl TryFrom<RawWindow> for SendingWindow {
    type Error = ParseError;
    fn try_from(raw: RawWindow) -> Result<Self, ParseError> {
        let days = raw
            .days
            .iter()
            .map(|d| parse_day(d))
            .collect::<Result<Vec<_>, _>>()?;
        let start = parse_hhmm("start", &raw.start, false)?;
        let end = parse_hhmm("end", &raw.end, true)?;
        SendingWindow::new(&days, start, end)
    }
}

impl From<SendingWindow> for RawWindow {
    fn from(w: SendingWindow) -> RawWindow {
        RawWindow {
            days: WEEK
                .iter()
                .filter(|&&(d, _)| w.allows_day(d))
                .map(|&(_, name)| name.to_string())
                .collect(),
            start: format_hhmm(w.start),
            end: format_end(w.end),
        }
    }
}

/// The contact frequency cap: at most `max` outbound messages per lead in any `window` (SPEC
/// section 6: default 1 per 48 hours), counting every outbound message whatever sent it.
///
/// A message sent at `s` counts against instant `t` while `s` is in `(t - window, t]`: a message
/// sent exactly `window` ago has aged out. Messages recorded after `t` (clock skew, a manual
/// clock moved back) are counted too, because the cap protects the lead and a message we know of
/// should never make sending easier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    pub max: u32,
    pub window: SignedDuration,
}

impl Default for FrequencyCap {
    /// The seed's "max 1 outbound message per 48 hours".
    fn default() -> Self {
        FrequencyCap {
            max: 1,
            window: SignedDuration::from_hours(48),
        }
    }
}

impl FrequencyCap {
    /// How many of `sent` count against instant `t`: those later than `t - window`.
    ///
    /// As `t` grows, `t - window` grows, so this never increases; that monotonicity is what makes
    /// [`FrequencyCap::next_allowed`] a threshold and [`earliest_send`] a single pass.
    fn in_window(&self, t: Timestamp, sent: &[Timestamp]) -> usize {
        let horizon = t.saturating_sub(self.window).unwrap_or(Timestamp::MIN);
        sent.iter().filter(|&&s| s > horizon).count()
    }

    /// Whether one more message at `t` keeps the cap.
    pub fn allows(&self, t: Timestamp, sent: &[Timestamp]) -> bool {
        (self.in_window(t, sent) as u64) < u64::from(self.max)
    }

    /// Earliest instant `>= now` at which one more message keeps the cap. `sent` are the send
    /// times of earlier outbound messages, in any order; older ones are ignored and any after
    /// `now` count as in the window.
    ///
    /// If fewer than `max` count at `now`, the answer is `now`. Otherwise, with the `count`
    /// in-window sends sorted oldest first, it is the `(count - max + 1)`-th oldest plus `window`:
    /// at that instant it and every older one have aged out, leaving `max - 1`, while a moment
    /// earlier it still counts, leaving `max`. A cap with `max == 0` never allows a message, and
    /// the answer is `Timestamp::MAX`.
    pub fn next_allowed(&self, now: Timestamp, sent: &[Timestamp]) -> Timestamp {
        let horizon = now.saturating_sub(self.window).unwrap_or(Timestamp::MIN);
        let mut recent: Vec<Timestamp> = sent.iter().copied().filter(|&s| s > horizon).collect();
        let max = usize::try_from(self.max).unwrap_or(usize::MAX);
        if recent.len() < max {
            return now;
        }
        if max == 0 {
            return Timestamp::MAX;
        }
        recent.sort_unstable();
        let k = recent.len() - max; // zero-based index of the (count - max + 1)-th oldest
        let at = recent[k]
            .saturating_add(self.window)
            .unwrap_or(Timestamp::MAX);
        // `recent[k] > now - window`, so `at > now` already; `max` keeps that true even for a
        // non-positive `window`, where future sends alone can hold the cap.
        at.max(now)
    }
}

/// Which rule moved a send later; recorded as the deferral's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeferReason {
    FrequencyCap,
    SendingWindow,
}

impl DeferReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeferReason::FrequencyCap => "frequency_cap",
            DeferReason::SendingWindow => "sending_window",
        }
    }
}

impl fmt::Display for DeferReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The earliest instant `>= now` that both the cap and the window (if any) allow, and which of
/// them caused a deferral: `None` when sending now is allowed, `Some(FrequencyCap)` if the cap
/// deferred (even if the window then moved it further), else `Some(SendingWindow)`.
///
/// One pass is enough. Let `c = cap.next_allowed(now)` and `w = window.next_open(c)`.
/// - Nothing before `c` is allowed: the cap forbids every `t` in `[now, c)` by the definition
///   of `next_allowed`.
/// - Nothing in `[c, w)` is allowed: the window is closed there by the definition of
///   `next_open`.
/// - `w` itself is allowed: it is inside the window, and the number of sends counting against
///   an instant never increases as the instant moves later (the horizon `t - window` only moves
///   forward, and future sends count throughout), so the cap, satisfied at `c`, is still
///   satisfied at `w >= c`.
///
/// So `w` is the earliest allowed instant, and checking the cap again after moving to the window
/// could never change it. The `earliest_send_is_a_fixed_point` property test checks this.
pub fn earliest_send(
    now: Timestamp,
    cap: &FrequencyCap,
    sent: &[Timestamp],
    window: Option<&SendingWindow>,
    tz: &TimeZone,
) -> (Timestamp, Option<DeferReason>) {
    let after_cap = cap.next_allowed(now, sent);
    let at = match window {
        Some(w) => w.next_open(after_cap, tz),
        None => after_cap,
    };
    let reason = if after_cap > now {
        Some(DeferReason::FrequencyCap)
    } else if at > now {
        Some(DeferReason::SendingWindow)
    } else {
        None
    };
    (at, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::{date, time};
    use proptest::prelude::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn window(days: &[Weekday], start: (i8, i8), end: (i8, i8)) -> SendingWindow {
        SendingWindow::new(days, time(start.0, start.1, 0, 0), time(end.0, end.1, 0, 0)).unwrap()
    }

    const WEEKDAYS: [Weekday; 5] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
    ];
    const ALL_DAYS: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    fn office_hours() -> SendingWindow {
        window(&WEEKDAYS, (9, 0), (17, 0))
    }

    fn from_json(v: serde_json::Value) -> Result<SendingWindow, String> {
        serde_json::from_value::<SendingWindow>(v).map_err(|e| e.to_string())
    }

    // ---- serde -------------------------------------------------------------------------------

    #[test]
    fn serde_round_trip() {
        let v = json!({"days": ["mon", "wed", "fri"], "start": "09:00", "end": "17:30"});
        let w = from_json(v.clone()).unwrap();
        assert_eq!(
            w.days(),
            vec![Weekday::Monday, Weekday::Wednesday, Weekday::Friday]
        );
        assert_eq!(w.start(), time(9, 0, 0, 0));
        assert_eq!(w.end(), time(17, 30, 0, 0));
        assert_eq!(serde_json::to_value(&w).unwrap(), v);
        assert_eq!(from_json(serde_json::to_value(&w).unwrap()).unwrap(), w);
    }

    #[test]
    fn serde_normalizes_day_order_and_duplicates() {
        let w = from_json(json!({"days": ["sun", "mon", "sun"], "start": "00:00", "end": "24:00"}))
            .unwrap();
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            json!({"days": ["mon", "sun"], "start": "00:00", "end": "24:00"})
        );
        assert_eq!(w.end(), Time::MAX);
    }

    #[test]
    fn serde_in_an_option_is_null_or_object() {
        let none: Option<SendingWindow> = serde_json::from_value(json!(null)).unwrap();
        assert_eq!(none, None);
        assert_eq!(
            serde_json::to_value(None::<SendingWindow>).unwrap(),
            json!(null)
        );
        let some: Option<SendingWindow> =
            serde_json::from_value(json!({"days": ["mon"], "start": "09:00", "end": "17:00"}))
                .unwrap();
        assert!(some.is_some());
    }

    #[test]
    fn serde_rejects_unknown_day() {
        let e = from_json(json!({"days": ["mon", "funday"], "start": "09:00", "end": "17:00"}))
            .unwrap_err();
        assert!(e.contains("unknown day \"funday\""), "{e}");
        assert!(e.contains("mon, tue, wed, thu, fri, sat, sun"), "{e}");
        // Full names and capitals are not the documented form.
        assert!(from_json(json!({"days": ["Monday"], "start": "09:00", "end": "17:00"})).is_err());
        assert!(from_json(json!({"days": ["Mon"], "start": "09:00", "end": "17:00"})).is_err());
    }

    #[test]
    fn serde_rejects_bad_times() {
        let e = from_json(json!({"days": ["mon"], "start": "25:00", "end": "26:00"})).unwrap_err();
        assert!(e.contains("start \"25:00\" is not a time of day"), "{e}");
        for bad in [
            "9:00", "09:60", "09:00:00", "0900", "", "ab:cd", "-1:00", "24:00",
        ] {
            let e = from_json(json!({"days": ["mon"], "start": bad, "end": "23:00"})).unwrap_err();
            assert!(e.contains("not a time of day"), "{bad:?}: {e}");
        }
        let e = from_json(json!({"days": ["mon"], "start": "09:00", "end": "24:01"})).unwrap_err();
        assert!(e.contains("end \"24:01\" is not a time of day"), "{e}");
    }

    #[test]
    fn serde_rejects_start_not_before_end() {
        let e = from_json(json!({"days": ["mon"], "start": "17:00", "end": "09:00"})).unwrap_err();
        assert!(e.contains("start 17:00 must be before end 09:00"), "{e}");
        let e = from_json(json!({"days": ["mon"], "start": "09:00", "end": "09:00"})).unwrap_err();
        assert!(e.contains("must be before end"), "{e}");
    }

    #[test]
    fn serde_rejects_empty_days() {
        let e = from_json(json!({"days": [], "start": "09:00", "end": "17:00"})).unwrap_err();
        assert!(e.contains("at least one day"), "{e}");
    }

    #[test]
    fn serde_rejects_unknown_and_missing_fields() {
        let e = from_json(
            json!({"days": ["mon"], "start": "09:00", "end": "17:00", "timezone": "UTC"}),
        )
        .unwrap_err();
        assert!(e.contains("unknown field `timezone`"), "{e}");
        let e = from_json(json!({"days": ["mon"], "start": "09:00"})).unwrap_err();
        assert!(e.contains("missing field `end`"), "{e}");
        assert!(from_json(json!("09:00-17:00")).is_err());
    }

    #[test]
    fn new_validates() {
        assert!(SendingWindow::new(&[], time(9, 0, 0, 0), time(17, 0, 0, 0)).is_err());
        assert!(SendingWindow::new(&WEEKDAYS, time(17, 0, 0, 0), time(9, 0, 0, 0)).is_err());
        assert!(SendingWindow::new(&WEEKDAYS, time(9, 0, 30, 0), time(17, 0, 0, 0)).is_err());
        assert!(SendingWindow::new(&WEEKDAYS, time(9, 0, 0, 0), time(17, 0, 0, 1)).is_err());
        assert!(SendingWindow::new(&WEEKDAYS, time(0, 0, 0, 0), Time::MAX).is_ok());
    }

    // ---- next_open / contains ------------------------------------------------------------------

    #[test]
    fn inside_the_window_is_now() {
        let w = office_hours();
        let at = ts("2026-03-04T12:34:56.789Z"); // a Wednesday
        assert!(w.contains(at, &TimeZone::UTC));
        assert_eq!(w.next_open(at, &TimeZone::UTC), at);
        // The start is inclusive.
        let open = ts("2026-03-04T09:00:00Z");
        assert!(w.contains(open, &TimeZone::UTC));
        assert_eq!(w.next_open(open, &TimeZone::UTC), open);
    }

    #[test]
    fn before_the_window_opens_the_same_day() {
        let w = office_hours();
        assert_eq!(
            w.next_open(ts("2026-03-04T06:15:00Z"), &TimeZone::UTC),
            ts("2026-03-04T09:00:00Z")
        );
        assert_eq!(
            w.next_open(ts("2026-03-04T08:59:59.999999999Z"), &TimeZone::UTC),
            ts("2026-03-04T09:00:00Z")
        );
    }

    #[test]
    fn after_the_window_opens_the_next_day() {
        let w = office_hours();
        // The end is exclusive: 17:00 itself is closed.
        assert!(w.contains(ts("2026-03-04T16:59:59.999999999Z"), &TimeZone::UTC));
        assert!(!w.contains(ts("2026-03-04T17:00:00Z"), &TimeZone::UTC));
        assert_eq!(
            w.next_open(ts("2026-03-04T17:00:00Z"), &TimeZone::UTC),
            ts("2026-03-05T09:00:00Z")
        );
        assert_eq!(
            w.next_open(ts("2026-03-04T23:59:00Z"), &TimeZone::UTC),
            ts("2026-03-05T09:00:00Z")
        );
    }

    #[test]
    fn a_day_not_in_the_set_is_skipped() {
        let w = window(&[Weekday::Tuesday, Weekday::Thursday], (10, 0), (12, 0));
        // Wednesday 10:30 is inside the hours but not the days.
        let wed = ts("2026-03-04T10:30:00Z");
        assert!(!w.contains(wed, &TimeZone::UTC));
        assert_eq!(w.next_open(wed, &TimeZone::UTC), ts("2026-03-05T10:00:00Z"));
        // Thursday after hours: the next Tuesday.
        assert_eq!(
            w.next_open(ts("2026-03-05T12:00:00Z"), &TimeZone::UTC),
            ts("2026-03-10T10:00:00Z")
        );
    }

    #[test]
    fn over_a_weekend() {
        let w = office_hours();
        for at in [
            "2026-03-06T17:00:00Z",
            "2026-03-07T09:30:00Z",
            "2026-03-08T23:59:59Z",
        ] {
            assert_eq!(
                w.next_open(ts(at), &TimeZone::UTC),
                ts("2026-03-09T09:00:00Z"),
                "from {at}"
            );
        }
        assert_eq!(date(2026, 3, 9).weekday(), Weekday::Monday);
    }

    #[test]
    fn whole_day_window_ends_at_midnight() {
        let w = SendingWindow::new(&[Weekday::Monday], time(0, 0, 0, 0), Time::MAX).unwrap();
        assert!(w.contains(ts("2026-03-09T23:59:59.999999999Z"), &TimeZone::UTC));
        assert!(!w.contains(ts("2026-03-10T00:00:00Z"), &TimeZone::UTC));
        assert_eq!(
            w.next_open(ts("2026-03-10T00:00:00Z"), &TimeZone::UTC),
            ts("2026-03-16T00:00:00Z")
        );
    }

    // ---- daylight saving ------------------------------------------------------------------------

    #[test]
    fn new_york_spring_forward_start_in_the_gap() {
        // 2026-03-08 (Sunday): 02:00 EST jumps to 03:00 EDT, at 07:00Z. 02:30 never happens; the
        // first instant the clock reads at least 02:30 is 03:00 EDT.
        let ny = zone("America/New_York");
        let w = window(&ALL_DAYS, (2, 30), (17, 0));
        let midnight = ts("2026-03-08T05:00:00Z"); // 00:00 EST
        assert_eq!(w.next_open(midnight, &ny), ts("2026-03-08T07:00:00Z"));
        assert!(!w.contains(ts("2026-03-08T06:59:59.999999999Z"), &ny));
        assert!(w.contains(ts("2026-03-08T07:00:00Z"), &ny));
        // The next day is ordinary again: 02:30 EDT.
        assert_eq!(
            w.next_open(ts("2026-03-08T21:00:00Z"), &ny),
            ts("2026-03-09T06:30:00Z")
        );
        // The day before, 02:30 EST.
        assert_eq!(
            w.next_open(ts("2026-03-07T05:00:00Z"), &ny),
            ts("2026-03-07T07:30:00Z")
        );
    }

    #[test]
    fn new_york_spring_forward_nine_to_five() {
        let ny = zone("America/New_York");
        let w = window(&ALL_DAYS, (9, 0), (17, 0));
        // 09:00 EDT = 13:00Z on the day itself; the day before it was 09:00 EST = 14:00Z.
        assert_eq!(
            w.next_open(ts("2026-03-08T05:00:00Z"), &ny),
            ts("2026-03-08T13:00:00Z")
        );
        assert_eq!(
            w.next_open(ts("2026-03-07T05:00:00Z"), &ny),
            ts("2026-03-07T14:00:00Z")
        );
        // Closed at 17:00 EDT = 21:00Z.
        assert!(w.contains(ts("2026-03-08T20:59:59Z"), &ny));
        assert!(!w.contains(ts("2026-03-08T21:00:00Z"), &ny));
    }

    #[test]
    fn new_york_fall_back() {
        // 2026-11-01 (Sunday): 02:00 EDT goes back to 01:00 EST, at 06:00Z; 01:00-02:00 happens
        // twice.
        let ny = zone("America/New_York");
        let at = ts("2026-11-01T04:00:00Z"); // 00:00 EDT

        // 02:30 is not ambiguous: it happens once, in EST.
        let w = window(&ALL_DAYS, (2, 30), (17, 0));
        assert_eq!(w.next_open(at, &ny), ts("2026-11-01T07:30:00Z"));

        // 09:00 EST = 14:00Z (the day before it was 09:00 EDT = 13:00Z).
        let w = window(&ALL_DAYS, (9, 0), (17, 0));
        assert_eq!(w.next_open(at, &ny), ts("2026-11-01T14:00:00Z"));
        assert_eq!(
            w.next_open(ts("2026-10-31T04:00:00Z"), &ny),
            ts("2026-10-31T13:00:00Z")
        );

        // 01:30 is ambiguous: the earlier one, 01:30 EDT.
        let w = window(&ALL_DAYS, (1, 30), (17, 0));
        assert_eq!(w.next_open(at, &ny), ts("2026-11-01T05:30:00Z"));
        // Inside the first 01:30-02:00 ...
        assert!(w.contains(ts("2026-11-01T05:45:00Z"), &ny));
        // ... then the clock reads 01:00 EST again, before the window, until the second 01:30.
        assert!(!w.contains(ts("2026-11-01T06:00:00Z"), &ny));
        assert_eq!(
            w.next_open(ts("2026-11-01T06:00:00Z"), &ny),
            ts("2026-11-01T06:30:00Z")
        );
    }

    #[test]
    fn fall_back_can_reopen_a_window_that_had_closed() {
        // A window ending at 01:30: closed at 01:45 EDT, open again when the clock goes back to
        // 01:00 EST, i.e. the transition instant itself opens it.
        let ny = zone("America/New_York");
        let w = window(&ALL_DAYS, (0, 0), (1, 30));
        assert!(!w.contains(ts("2026-11-01T05:45:00Z"), &ny));
        assert_eq!(
            w.next_open(ts("2026-11-01T05:45:00Z"), &ny),
            ts("2026-11-01T06:00:00Z")
        );
    }

    #[test]
    fn paris_spring_forward() {
        // 2026-03-29 (Sunday): 02:00 CET jumps to 03:00 CEST, at 01:00Z.
        let paris = zone("Europe/Paris");
        let at = ts("2026-03-28T23:00:00Z"); // 00:00 CET
        let w = window(&ALL_DAYS, (2, 30), (17, 0));
        assert_eq!(w.next_open(at, &paris), ts("2026-03-29T01:00:00Z"));
        let w = window(&ALL_DAYS, (9, 0), (17, 0));
        assert_eq!(w.next_open(at, &paris), ts("2026-03-29T07:00:00Z"));
        assert_eq!(
            w.next_open(ts("2026-03-27T23:00:00Z"), &paris),
            ts("2026-03-28T08:00:00Z")
        );
    }

    #[test]
    fn tokyo_lead_versus_utc_lead() {
        let w = office_hours();
        let tokyo = zone("Asia/Tokyo");
        // Friday 20:00 UTC is Saturday 05:00 in Tokyo.
        let at = ts("2026-03-06T20:00:00Z");
        assert!(!w.contains(at, &TimeZone::UTC));
        assert_eq!(w.next_open(at, &TimeZone::UTC), ts("2026-03-09T09:00:00Z"));
        assert_eq!(w.next_open(at, &tokyo), ts("2026-03-09T00:00:00Z")); // Mon 09:00 JST
        // Thursday 23:00 UTC is Friday 08:00 in Tokyo: opens an hour later there, ten hours
        // later for the UTC lead.
        let at = ts("2026-03-05T23:00:00Z");
        assert_eq!(w.next_open(at, &tokyo), ts("2026-03-06T00:00:00Z"));
        assert_eq!(w.next_open(at, &TimeZone::UTC), ts("2026-03-06T09:00:00Z"));
        // Monday 03:00 UTC: noon in Tokyo (open), 03:00 for the UTC lead (closed).
        let at = ts("2026-03-09T03:00:00Z");
        assert!(w.contains(at, &tokyo));
        assert!(!w.contains(at, &TimeZone::UTC));
    }

    // ---- frequency cap -------------------------------------------------------------------------

    fn hours(h: i64) -> SignedDuration {
        SignedDuration::from_hours(h)
    }

    #[test]
    fn cap_default_is_one_per_48_hours() {
        assert_eq!(
            FrequencyCap::default(),
            FrequencyCap {
                max: 1,
                window: hours(48)
            }
        );
    }

    #[test]
    fn cap_max_one() {
        let cap = FrequencyCap {
            max: 1,
            window: hours(48),
        };
        let now = ts("2026-03-10T12:00:00Z");
        assert_eq!(cap.next_allowed(now, &[]), now);
        let sent = [ts("2026-03-09T12:00:00Z")];
        assert_eq!(cap.next_allowed(now, &sent), ts("2026-03-11T12:00:00Z"));
        // Only the newest of several matters with max 1; order does not.
        let sent = [
            ts("2026-03-09T12:00:00Z"),
            ts("2026-03-10T06:00:00Z"),
            ts("2026-03-08T18:00:00Z"),
        ];
        assert_eq!(cap.next_allowed(now, &sent), ts("2026-03-12T06:00:00Z"));
    }

    #[test]
    fn cap_max_two() {
        let cap = FrequencyCap {
            max: 2,
            window: hours(24),
        };
        let now = ts("2026-03-10T12:00:00Z");
        // One in the window: still room.
        assert_eq!(cap.next_allowed(now, &[ts("2026-03-10T01:00:00Z")]), now);
        // Two: wait until the older ages out.
        let sent = [ts("2026-03-10T08:00:00Z"), ts("2026-03-10T01:00:00Z")];
        assert_eq!(cap.next_allowed(now, &sent), ts("2026-03-11T01:00:00Z"));
        // Three (over the cap, e.g. sent by hand): two must age out, so the second oldest.
        let sent = [
            ts("2026-03-10T08:00:00Z"),
            ts("2026-03-10T01:00:00Z"),
            ts("2026-03-10T05:00:00Z"),
        ];
        assert_eq!(cap.next_allowed(now, &sent), ts("2026-03-11T05:00:00Z"));
    }

    #[test]
    fn cap_ignores_sends_older_than_the_window() {
        let cap = FrequencyCap {
            max: 1,
            window: hours(48),
        };
        let now = ts("2026-03-10T12:00:00Z");
        let sent = [ts("2026-03-01T00:00:00Z"), ts("2026-03-08T11:59:59Z")];
        assert_eq!(cap.next_allowed(now, &sent), now);
    }

    #[test]
    fn cap_boundary_is_exclusive_of_exactly_window_ago() {
        let cap = FrequencyCap {
            max: 1,
            window: hours(48),
        };
        let now = ts("2026-03-10T12:00:00Z");
        // Exactly 48 hours ago: aged out.
        assert_eq!(cap.next_allowed(now, &[ts("2026-03-08T12:00:00Z")]), now);
        assert!(cap.allows(now, &[ts("2026-03-08T12:00:00Z")]));
        // One nanosecond later: still counts, for one more nanosecond.
        let sent = [ts("2026-03-08T12:00:00.000000001Z")];
        assert!(!cap.allows(now, &sent));
        assert_eq!(
            cap.next_allowed(now, &sent),
            ts("2026-03-10T12:00:00.000000001Z")
        );
        // A send at `now` itself counts.
        assert_eq!(cap.next_allowed(now, &[now]), ts("2026-03-12T12:00:00Z"));
    }

    #[test]
    fn cap_counts_sends_after_now() {
        let cap = FrequencyCap {
            max: 1,
            window: hours(48),
        };
        let now = ts("2026-03-10T12:00:00Z");
        let future = ts("2026-03-10T13:00:00Z");
        assert_eq!(cap.next_allowed(now, &[future]), ts("2026-03-12T13:00:00Z"));
    }

    #[test]
    fn cap_of_zero_never_allows() {
        let cap = FrequencyCap {
            max: 0,
            window: hours(48),
        };
        let now = ts("2026-03-10T12:00:00Z");
        assert_eq!(cap.next_allowed(now, &[]), Timestamp::MAX);
    }

    // ---- earliest_send ---------------------------------------------------------------------------

    #[test]
    fn earliest_send_now_when_nothing_forbids() {
        let cap = FrequencyCap::default();
        let now = ts("2026-03-04T10:00:00Z");
        let w = office_hours();
        assert_eq!(
            earliest_send(now, &cap, &[], Some(&w), &TimeZone::UTC),
            (now, None)
        );
        assert_eq!(
            earliest_send(now, &cap, &[], None, &TimeZone::UTC),
            (now, None)
        );
    }

    #[test]
    fn earliest_send_window_only() {
        let cap = FrequencyCap::default();
        let now = ts("2026-03-04T18:00:00Z");
        let w = office_hours();
        assert_eq!(
            earliest_send(now, &cap, &[], Some(&w), &TimeZone::UTC),
            (ts("2026-03-05T09:00:00Z"), Some(DeferReason::SendingWindow))
        );
    }

    #[test]
    fn earliest_send_cap_only() {
        let cap = FrequencyCap::default();
        let now = ts("2026-03-04T10:00:00Z");
        let sent = [ts("2026-03-03T11:00:00Z")];
        assert_eq!(
            earliest_send(now, &cap, &sent, None, &TimeZone::UTC),
            (ts("2026-03-05T11:00:00Z"), Some(DeferReason::FrequencyCap))
        );
        // The cap's instant is inside the window: no further move, still the cap.
        let w = office_hours();
        assert_eq!(
            earliest_send(now, &cap, &sent, Some(&w), &TimeZone::UTC),
            (ts("2026-03-05T11:00:00Z"), Some(DeferReason::FrequencyCap))
        );
    }

    #[test]
    fn earliest_send_cap_then_window_reports_the_cap() {
        // The cap frees Friday 20:00, outside office hours; the answer is Monday 09:00 and the
        // reason is the cap, which deferred first.
        let cap = FrequencyCap::default();
        let now = ts("2026-03-04T10:00:00Z");
        let sent = [ts("2026-03-04T20:00:00Z")]; // recorded "later" than now: still counts
        let w = office_hours();
        let (at, reason) = earliest_send(now, &cap, &sent, Some(&w), &TimeZone::UTC);
        assert_eq!(at, ts("2026-03-09T09:00:00Z"));
        assert_eq!(reason, Some(DeferReason::FrequencyCap));
    }

    #[test]
    fn defer_reason_text() {
        assert_eq!(DeferReason::FrequencyCap.as_str(), "frequency_cap");
        assert_eq!(DeferReason::SendingWindow.as_str(), "sending_window");
        assert_eq!(DeferReason::SendingWindow.to_string(), "sending_window");
        assert_eq!(
            serde_json::to_value(DeferReason::FrequencyCap).unwrap(),
            json!("frequency_cap")
        );
    }

    // ---- properties ------------------------------------------------------------------------------

    const ZONES: &[&str] = &[
        "UTC",
        "America/New_York",
        "Europe/Paris",
        "Asia/Tokyo",
        "Australia/Lord_Howe", // half-hour DST shift
        "Asia/Kathmandu",      // +05:45
        "America/St_Johns",    // -03:30 with DST
        "Pacific/Apia",        // skipped a whole day in 2011
        "Africa/Casablanca",   // DST suspended every Ramadan
    ];

    fn arb_window() -> impl Strategy<Value = SendingWindow> {
        // Minutes of the day: start in 00:00..23:59, end after it up to 24:00.
        (1u8..128, 0i32..1440)
            .prop_flat_map(|(mask, start)| (Just(mask), Just(start), start + 1..=1440))
            .prop_map(|(mask, start, end)| {
                let days: Vec<Weekday> = (0..7)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| ALL_DAYS[i])
                    .collect();
                let to_time = |m: i32| {
                    if m == 1440 {
                        Time::MAX
                    } else {
                        time((m / 60) as i8, (m % 60) as i8, 0, 0)
                    }
                };
                SendingWindow::new(&days, to_time(start), to_time(end)).unwrap()
            })
    }

    fn arb_instant() -> impl Strategy<Value = Timestamp> {
        // 2000-01-01 .. 2040-01-01, at nanosecond resolution.
        (946_684_800i64..2_208_988_800, 0i32..1_000_000_000)
            .prop_map(|(s, ns)| Timestamp::new(s, ns).unwrap())
    }

    fn arb_zone() -> impl Strategy<Value = TimeZone> {
        prop::sample::select(ZONES).prop_map(zone)
    }

    proptest! {
        #[test]
        fn next_open_is_inside_at_or_after_and_idempotent(
            w in arb_window(), at in arb_instant(), tz in arb_zone()
        ) {
            let open = w.next_open(at, &tz);
            prop_assert!(open >= at);
            prop_assert!(w.contains(open, &tz), "{open} not inside {w:?} in {tz:?}");
            prop_assert_eq!(w.next_open(open, &tz), open);
            // The earliest: just before it, the window is closed (unless that is before `at`).
            if open > at {
                let before = open - SignedDuration::from_nanos(1);
                prop_assert!(!w.contains(before, &tz));
            }
            // Likewise for every whole minute in between (offsets and window edges are whole
            // minutes, so an opening between `at` and `open` would contain one of these).
            let mut t = at;
            while t < open {
                prop_assert!(!w.contains(t, &tz), "{t} inside {w:?} before {open}");
                t += SignedDuration::from_mins(1);
            }
        }

        #[test]
        fn next_allowed_satisfies_the_cap_and_is_earliest(
            max in 1u32..5,
            window_h in 1i64..100,
            now in arb_instant(),
            offsets in prop::collection::vec(-200i64 * 3600..10 * 3600, 0..8),
        ) {
            let cap = FrequencyCap { max, window: hours(window_h) };
            let sent: Vec<Timestamp> =
                offsets.iter().map(|&o| now + SignedDuration::from_secs(o)).collect();
            let at = cap.next_allowed(now, &sent);
            prop_assert!(at >= now);
            let counted = sent.iter().filter(|&&s| s > at - cap.window).count();
            prop_assert!(counted < max as usize);
            prop_assert!(cap.allows(at, &sent));
            prop_assert_eq!(cap.next_allowed(at, &sent), at);
            if at > now {
                prop_assert!(!cap.allows(at - SignedDuration::from_nanos(1), &sent));
            }
        }

        #[test]
        fn earliest_send_is_a_fixed_point(
            w in prop::option::of(arb_window()),
            tz in arb_zone(),
            max in 1u32..4,
            window_h in 1i64..100,
            now in arb_instant(),
            offsets in prop::collection::vec(-200i64 * 3600..10 * 3600, 0..6),
        ) {
            let cap = FrequencyCap { max, window: hours(window_h) };
            let sent: Vec<Timestamp> =
                offsets.iter().map(|&o| now + SignedDuration::from_secs(o)).collect();
            let (at, reason) = earliest_send(now, &cap, &sent, w.as_ref(), &tz);
            prop_assert!(at >= now);
            // One pass sufficed: at the answer both rules already allow sending.
            prop_assert_eq!(cap.next_allowed(at, &sent), at);
            if let Some(w) = &w {
                prop_assert!(w.contains(at, &tz));
            }
            prop_assert_eq!(earliest_send(at, &cap, &sent, w.as_ref(), &tz), (at, None));
            // And it is the earliest: a nanosecond before, one of them forbids.
            if at > now {
                let before = at - SignedDuration::from_nanos(1);
                let cap_ok = cap.allows(before, &sent);
                let window_ok = w.as_ref().is_none_or(|w| w.contains(before, &tz));
                prop_assert!(!(cap_ok && window_ok));
            }
            let expected = if !cap.allows(now, &sent) {
                Some(DeferReason::FrequencyCap)
            } else if w.as_ref().is_some_and(|w| !w.contains(now, &tz)) {
                Some(DeferReason::SendingWindow)
            } else {
                None
            };
            prop_assert_eq!(reason, expected);
        }
    }
}
