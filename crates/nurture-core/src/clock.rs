//! Time comes from an injected clock (SPEC section 5, "Manual clock"): the real one in
//! production, a manual one that stands still until told in tests and `serve --clock manual`.

use std::sync::Mutex;

use jiff::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The operating system's clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told. Microsecond precision, like the stores.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: Mutex::new(truncate_to_micros(start)),
        }
    }
    pub fn set(&self, to: Timestamp) {
        *self.now.lock().expect("clock lock") = truncate_to_micros(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().expect("clock lock")
    }
}

/// The stores keep microseconds; truncating here keeps what is read back equal to what was
/// written.
pub fn truncate_to_micros(t: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

/// The next whole UTC hour strictly after `t`: when hourly periodic work (the enrollment sweep)
/// runs, under either clock.
pub fn next_hour_after(t: Timestamp) -> Timestamp {
    let hour = 3_600_000_000i64;
    let micros = t.as_microsecond();
    let next = (micros.div_euclid(hour) + 1) * hour;
    Timestamp::from_microsecond(next).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hour_after_is_strictly_later_and_whole() {
        let t: Timestamp = "2026-01-05T09:00:00Z".parse().unwrap();
        assert_eq!(next_hour_after(t), "2026-01-05T10:00:00Z".parse().unwrap());
        let t: Timestamp = "2026-01-05T09:59:59.5Z".parse().unwrap();
        assert_eq!(next_hour_after(t), "2026-01-05T10:00:00Z".parse().unwrap());
    }

    #[test]
    fn manual_clock_stands_still_until_set() {
        let start: Timestamp = "2026-01-05T09:00:00Z".parse().unwrap();
        let c = ManualClock::new(start);
        assert_eq!(c.now(), start);
        assert_eq!(c.now(), start);
        let later: Timestamp = "2026-01-06T09:00:00Z".parse().unwrap();
        c.set(later);
        assert_eq!(c.now(), later);
    }
}
