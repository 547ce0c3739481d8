//! `[calendar]` (fiscal year start, time zone, weekend, holidays) and the `[window.*]`
//! sections: named business-day windows, each checked to fit every period it is used in.

use super::*;

/// The first day of a period (checked over four years from 2024) in which the window finds
/// too few business days, if any.
fn period_without_room(calendar: &Calendar, window: &Window) -> Option<NaiveDate> {
    (0..48).find_map(|m| {
        let day = NaiveDate::from_ymd_opt(2024 + m / 12, (m % 12) as u32 + 1, 1)?;
        calendar.window_span(window, day).is_none().then_some(day)
    })
}

impl Compiler<'_, '_> {
    pub(super) fn calendar(&mut self, root: &Table<'_, '_>) -> Calendar {
        let mut cal = Calendar::default();
        let Some(t) = root.table(self.p, "calendar", CALENDAR_KEYS) else {
            return cal;
        };
        if let Some((month, span)) = t.uint(self.p, "fiscal_year_start") {
            if (1..=12).contains(&month) {
                cal.fiscal_year_start = month as u32;
            } else {
                self.p.push(
                    Problem::new(span, "fiscal_year_start must be a month number, 1 to 12").help(
                        "e.g. fiscal_year_start = 2 for a fiscal year starting on 1 February",
                    ),
                );
            }
        }
        if let Some(tz) = t.str(self.p, "time_zone") {
            match tz.value.parse() {
                Ok(zone) => cal.time_zone = zone,
                Err(_) => self.p.push(
                    Problem::new(tz.span, format!("`{}` is not a time zone", tz.value))
                        .help("use an IANA name such as America/New_York, Europe/London or UTC"),
                ),
            }
        }
        if let Some((days, _)) = t.str_array(self.p, "weekend") {
            cal.weekend.clear();
            for day in days {
                match day.value.parse::<Weekday>() {
                    Ok(wd) => {
                        cal.weekend.insert(wd);
                    }
                    Err(_) => self.p.push(
                        Problem::new(
                            day.span,
                            format!("`{}` is not a day of the week", day.value),
                        )
                        .help("write days as \"saturday\", \"sunday\", …"),
                    ),
                }
            }
            if cal.weekend.len() == 7 {
                self.p.push(Problem::new(
                    t.get("weekend").map_or(0..0, |v| v.span()),
                    "every day is a weekend day: no window could ever have a business day",
                ));
            }
        }
        if let Some(value) = t.get("holidays") {
            match value.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        match self.date(item) {
                            Some(d) => {
                                cal.holidays.insert(d);
                            }
                            None => self.p.push(
                                Problem::new(item.span(), "a holiday must be a date")
                                    .label("expected YYYY-MM-DD"),
                            ),
                        }
                    }
                }
                _ => self.p.push(
                    Problem::new(value.span(), "holidays must be an array of dates")
                        .help("holidays = [2026-12-25, 2027-01-01]"),
                ),
            }
        }
        cal
    }

    pub(super) fn date(&self, value: &Spanned<DeValue<'_>>) -> Option<NaiveDate> {
        let text = match scalar(value)? {
            Scalar::Date(d) | Scalar::Str(d) => d,
            _ => return None,
        };
        NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok()
    }

    pub(super) fn windows(&mut self, root: &Table<'_, '_>, calendar: &Calendar) -> Vec<Window> {
        let mut out = Vec::new();
        let Some(wt) = root.map(self.p, "window") else {
            return out;
        };
        for (name, value) in wt.entries() {
            let what = format!("[window.{}]", name.value);
            let Some(t) = Table::new(self.p, value, &what, WINDOW_KEYS) else {
                continue;
            };
            let last = t.uint(self.p, "last_business_days");
            let first = t.uint(self.p, "first_business_days");
            let (anchor, days) = match (last, first) {
                (Some(l), None) => (Anchor::Last, l),
                (None, Some(f)) => (Anchor::First, f),
                (Some(_), Some((_, span))) => {
                    self.p.push(
                        Problem::new(
                            span,
                            "a window is either the last or the first business days, not both",
                        )
                        .help("split it into two windows"),
                    );
                    continue;
                }
                (None, None) if t.attempted("first_business_days") => continue,
                (None, None) => {
                    t.missing(
                        self.p,
                        "last_business_days",
                        "e.g. last_business_days = 5 (or first_business_days = 3)",
                    );
                    continue;
                }
            };
            let period = match t.str(self.p, "of") {
                Some(s) => {
                    let options = [
                        ("fiscal_quarter", Period::FiscalQuarter),
                        ("fiscal_year", Period::FiscalYear),
                        ("month", Period::Month),
                    ];
                    match choice(self.p, &s, "of", &options) {
                        Some(p) => p,
                        None => continue,
                    }
                }
                None => {
                    t.missing(
                        self.p,
                        "of",
                        "of = \"fiscal_quarter\", \"fiscal_year\" or \"month\"",
                    );
                    continue;
                }
            };
            let (n, span) = days;
            if n == 0 || n > u64::from(period.max_window_days()) {
                self.p.push(
                    Problem::new(
                        span,
                        format!(
                            "a window of {n} business days does not fit in a {}",
                            period.as_str().replace('_', " ")
                        ),
                    )
                    .help(format!("use 1 to {}", period.max_window_days())),
                );
                continue;
            }
            let window = Window {
                name: name.value,
                anchor,
                business_days: n as u32,
                period,
            };
            if let Some(day) = period_without_room(calendar, &window) {
                let period_span = calendar.period_of(period, day);
                self.p.push(
                    Problem::new(span.clone(), format!(
                        "window `{}` does not fit in the {} from {} to {}: it has fewer business days",
                        window.name,
                        period.as_str().replace('_', " "),
                        period_span.first,
                        period_span.last
                    ))
                    .help("shorten the window, or check the calendar's weekend and holidays"),
                );
                continue;
            }
            out.push(window);
        }
        out
    }
}
