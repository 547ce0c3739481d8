//! The fiscal calendar and the named time windows that `when` overrides refer to.
//!
//! Windows are spans of local dates (in the calendar's time zone), recomputed for the fiscal
//! period that contains the instant being decided: "the last 5 business days of each fiscal
//! quarter" is a different span each quarter. Everything here is a pure function of the
//! instant passed in; nothing reads a clock.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc, Weekday};
use chrono_tz::Tz;

/// The fiscal calendar of one rule file.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    /// The month (1–12) in which the fiscal year starts.
    pub fiscal_year_start: u32,
    pub time_zone: Tz,
    pub weekend: HashSet<Weekday>,
    pub holidays: BTreeSet<NaiveDate>,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar {
            fiscal_year_start: 1,
            time_zone: Tz::UTC,
            weekend: [Weekday::Sat, Weekday::Sun].into_iter().collect(),
            holidays: BTreeSet::new(),
        }
    }
}

/// The period a window is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    FiscalQuarter,
    FiscalYear,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::FiscalQuarter => "fiscal_quarter",
            Period::FiscalYear => "fiscal_year",
            Period::Month => "month",
        }
    }

    fn months(self) -> i32 {
        match self {
            Period::FiscalQuarter => 3,
            Period::FiscalYear => 12,
            Period::Month => 1,
        }
    }

    /// The fewest business days any such period can have, whatever the calendar (a 28-day
    /// February with a five-day week has 20); a window longer than that could cover a whole
    /// period, which is never what an admin meant.
    pub fn max_window_days(self) -> u32 {
        match self {
            Period::Month => 20,
            Period::FiscalQuarter => 60,
            Period::FiscalYear => 250,
        }
    }
}

/// Which end of the period the window sits at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    First,
    Last,
}

/// A named window: the first or last `business_days` business days of each `period`.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub name: String,
    pub anchor: Anchor,
    pub business_days: u32,
    pub period: Period,
}

/// The concrete span of a window in one period, in local dates (both ends included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: NaiveDate,
    pub last: NaiveDate,
}

impl Calendar {
    pub fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.time_zone).date_naive()
    }

    pub fn is_business_day(&self, day: NaiveDate) -> bool {
        !self.weekend.contains(&day.weekday()) && !self.holidays.contains(&day)
    }

    /// The first and last local dates of the period that contains `day`.
    pub fn period_of(&self, period: Period, day: NaiveDate) -> Span {
        let month_index = day.year() * 12 + day.month0() as i32;
        let start_offset = match period {
            Period::Month => 0,
            _ => (day.month0() as i32 - (self.fiscal_year_start as i32 - 1)).rem_euclid(12),
        } % period.months();
        let start_index = month_index - start_offset;
        let first = first_of_month(start_index);
        let last = first_of_month(start_index + period.months())
            .pred_opt()
            .unwrap_or(first);
        Span { first, last }
    }

    /// The window's span in the period containing `day`, or `None` when the period has fewer
    /// business days than the window asks for (a calendar so full of holidays is reported by
    /// `rules check`, but deciding must not fail on it).
    pub fn window_span(&self, window: &Window, day: NaiveDate) -> Option<Span> {
        let period = self.period_of(window.period, day);
        let mut counted = 0;
        let mut cursor = match window.anchor {
            Anchor::Last => period.last,
            Anchor::First => period.first,
        };
        loop {
            if cursor < period.first || cursor > period.last {
                return None;
            }
            if self.is_business_day(cursor) {
                counted += 1;
                if counted == window.business_days {
                    return Some(match window.anchor {
                        Anchor::Last => Span {
                            first: cursor,
                            last: period.last,
                        },
                        Anchor::First => Span {
                            first: period.first,
                            last: cursor,
                        },
                    });
                }
            }
            cursor = match window.anchor {
                Anchor::Last => cursor.checked_sub_days(Days::new(1))?,
                Anchor::First => cursor.checked_add_days(Days::new(1))?,
            };
        }
    }

    /// Whether `at` falls inside the window, and the span it was checked against.
    pub fn in_window(&self, window: &Window, at: DateTime<Utc>) -> (bool, Option<Span>) {
        let day = self.local_date(at);
        let span = self.window_span(window, day);
        let inside = span.is_some_and(|s| s.first <= day && day <= s.last);
        (inside, span)
    }
}

fn first_of_month(month_index: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(
        month_index.div_euclid(12),
        month_index.rem_euclid(12) as u32 + 1,
        1,
    )
    .unwrap_or(NaiveDate::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn quarter_end(days: u32) -> Window {
        Window {
            name: "quarter_end".into(),
            anchor: Anchor::Last,
            business_days: days,
            period: Period::FiscalQuarter,
        }
    }

    #[test]
    fn fiscal_quarters_follow_the_fiscal_year_start() {
        let cal = Calendar {
            fiscal_year_start: 2,
            ..Calendar::default()
        };
        // FY starting in February: Q4 is Nov–Jan.
        assert_eq!(
            cal.period_of(Period::FiscalQuarter, d(2026, 12, 15)),
            Span {
                first: d(2026, 11, 1),
                last: d(2027, 1, 31)
            }
        );
        assert_eq!(
            cal.period_of(Period::FiscalYear, d(2026, 1, 10)),
            Span {
                first: d(2025, 2, 1),
                last: d(2026, 1, 31)
            }
        );
        assert_eq!(
            cal.period_of(Period::Month, d(2028, 2, 10)),
            Span {
                first: d(2028, 2, 1),
                last: d(2028, 2, 29)
            }
        );
    }

    #[test]
    fn last_business_days_skip_weekends_and_holidays() {
        let mut cal = Calendar::default();
        // Q4 2026 ends Thursday 31 Dec. With 25 Dec a holiday, the last five business days
        // are 24, 28, 29, 30, 31 December.
        cal.holidays.insert(d(2026, 12, 25));
        let span = cal.window_span(&quarter_end(5), d(2026, 12, 1)).unwrap();
        assert_eq!(span.first, d(2026, 12, 24));
        assert_eq!(span.last, d(2026, 12, 31));
    }

    #[test]
    fn in_window_uses_the_calendar_time_zone() {
        let cal = Calendar {
            time_zone: "America/Los_Angeles".parse().unwrap(),
            ..Calendar::default()
        };
        let w = quarter_end(5);
        // 2026-12-24 is the first day of the window (Q4 ends Thu 31 Dec: 25–31 has 5 business
        // days, so 24 Dec is outside). 2026-12-25 07:00 UTC is still 24 Dec in Los Angeles.
        let before = Utc.with_ymd_and_hms(2026, 12, 25, 7, 0, 0).unwrap();
        let inside = Utc.with_ymd_and_hms(2026, 12, 25, 9, 0, 0).unwrap();
        assert!(!cal.in_window(&w, before).0);
        assert!(cal.in_window(&w, inside).0);
    }

    #[test]
    fn first_business_days() {
        let cal = Calendar::default();
        let w = Window {
            name: "month_start".into(),
            anchor: Anchor::First,
            business_days: 3,
            period: Period::Month,
        };
        // November 2026 starts on a Sunday: Mon 2, Tue 3, Wed 4.
        let span = cal.window_span(&w, d(2026, 11, 20)).unwrap();
        assert_eq!(
            span,
            Span {
                first: d(2026, 11, 1),
                last: d(2026, 11, 4)
            }
        );
    }

    #[test]
    fn a_window_longer_than_its_period_has_no_span() {
        let cal = Calendar::default();
        assert_eq!(cal.window_span(&quarter_end(200), d(2026, 5, 5)), None);
    }
}
