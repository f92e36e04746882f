//! Today's date in the English long forms the prompts show the model
//! (`January 05, 2026`; Duo Chat adds the weekday). Computed from the Unix
//! clock in UTC with the proleptic Gregorian calendar: a date library would be
//! a dependency for two format strings.

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];

/// A calendar day (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Day {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    /// Days since 1970-01-01 (a Thursday).
    days: i64,
}

impl Day {
    pub fn today() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Self::from_days(secs.div_euclid(86_400))
    }

    /// Howard Hinnant's `civil_from_days`.
    pub fn from_days(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Day {
            year,
            month,
            day,
            days,
        }
    }

    fn month_name(&self) -> &'static str {
        MONTHS[(self.month as usize).saturating_sub(1) % 12]
    }

    /// `January 05, 2026` (upstream's `%B %d, %Y`).
    pub fn long(&self) -> String {
        format!("{} {:02}, {}", self.month_name(), self.day, self.year)
    }

    /// `Monday, January, 05, 2026` (the Duo Chat system prompt's form).
    pub fn with_weekday(&self) -> String {
        let weekday = WEEKDAYS[self.days.rem_euclid(7) as usize];
        format!(
            "{weekday}, {}, {:02}, {}",
            self.month_name(),
            self.day,
            self.year
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        // 2026-01-05 is 20458 days after the epoch, a Monday.
        let d = Day::from_days(20_458);
        assert_eq!((d.year, d.month, d.day), (2026, 1, 5));
        assert_eq!(d.long(), "January 05, 2026");
        assert_eq!(d.with_weekday(), "Monday, January, 05, 2026");
        assert_eq!(Day::from_days(0).long(), "January 01, 1970");
        assert_eq!(Day::from_days(19_782).long(), "February 29, 2024");
        assert_eq!(Day::from_days(11_016).long(), "February 29, 2000");
    }
}
