//! Time windows (`time Mon-Fri 08:00-18:00`), evaluated in the card's local time.

use std::fmt;

use chrono::{Datelike, Timelike};

use crate::diagnostic::ErrorKind;
use crate::value::ValueError;

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const ALL_DAYS: u8 = 0b111_1111;
const MINUTES_PER_DAY: u16 = 24 * 60;

/// A moment in local time, as rules see it: day of week and minute of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// 0 = Monday … 6 = Sunday.
    weekday: u8,
    /// 0 ..= 1439.
    minute: u16,
}

impl LocalTime {
    pub fn new(weekday: u8, hour: u8, minute: u8) -> Option<LocalTime> {
        (weekday < 7 && hour < 24 && minute < 60).then_some(LocalTime {
            weekday,
            minute: u16::from(hour) * 60 + u16::from(minute),
        })
    }

    /// Now, in the time zone the system is set to (`/etc/localtime`, or `TZ`).
    pub fn now() -> LocalTime {
        let now = chrono::Local::now();
        LocalTime {
            weekday: now.weekday().num_days_from_monday() as u8,
            minute: (now.hour() * 60 + now.minute()) as u16,
        }
    }

    /// Parses `Mon 09:30`, the form the CLI's `--at` takes.
    pub fn parse(text: &str) -> Result<LocalTime, ValueError> {
        let (day, clock) = text.trim().split_once(' ').ok_or_else(|| {
            ValueError::at(
                ErrorKind::BadTime,
                0,
                format!("`{text}`: write a day and a time, as in `Mon 09:30`"),
            )
        })?;
        let weekday = parse_day(day, 0)?;
        let minute = parse_clock(clock.trim(), day.len() + 1, false)?;
        Ok(LocalTime { weekday, minute })
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let day = DAY_NAMES[usize::from(self.weekday)];
        write!(f, "{day} {:02}:{:02}", self.minute / 60, self.minute % 60)
    }
}

/// Days of the week plus a time-of-day range. A range that ends before it starts
/// (`22:00-06:00`) runs past midnight: it belongs to the day it starts on and goes on into
/// the next morning, the way people read "Fri 22:00-06:00".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeWindow {
    /// Bit 0 = Monday … bit 6 = Sunday.
    days: u8,
    start: u16,
    /// Exclusive; 1440 for "until midnight".
    end: u16,
}

impl TimeWindow {
    pub fn contains(&self, at: LocalTime) -> bool {
        let on = |day: u8| self.days & (1 << day) != 0;
        if self.start < self.end {
            on(at.weekday) && (self.start..self.end).contains(&at.minute)
        } else {
            let yesterday = (at.weekday + 6) % 7;
            (on(at.weekday) && at.minute >= self.start) || (on(yesterday) && at.minute < self.end)
        }
    }

    /// Parses the one or two tokens after `time`: days, a clock range, or days then a range.
    /// Returns the window and how many tokens it used; an error says which token (0 or 1).
    pub(crate) fn parse(
        first: &str,
        second: Option<&str>,
    ) -> Result<(TimeWindow, usize), (ValueError, usize)> {
        if first.contains(':') {
            let (start, end) = parse_range(first).map_err(|e| (e, 0))?;
            return Ok((
                TimeWindow {
                    days: ALL_DAYS,
                    start,
                    end,
                },
                1,
            ));
        }
        let days = parse_days(first).map_err(|e| (e, 0))?;
        match second {
            Some(range) if range.contains(':') => {
                let (start, end) = parse_range(range).map_err(|e| (e, 1))?;
                Ok((TimeWindow { days, start, end }, 2))
            }
            _ => Ok((
                TimeWindow {
                    days,
                    start: 0,
                    end: MINUTES_PER_DAY,
                },
                1,
            )),
        }
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all_day = self.start == 0 && self.end == MINUTES_PER_DAY;
        if self.days != ALL_DAYS || all_day {
            write_days(f, self.days)?;
        }
        if !all_day {
            if self.days != ALL_DAYS {
                f.write_str(" ")?;
            }
            write!(
                f,
                "{:02}:{:02}-{:02}:{:02}",
                self.start / 60,
                self.start % 60,
                self.end / 60,
                self.end % 60
            )?;
        }
        Ok(())
    }
}

/// Prints a day mask as runs: `Mon-Fri`, `Mon,Wed,Sat-Sun`.
fn write_days(f: &mut fmt::Formatter<'_>, days: u8) -> fmt::Result {
    let mut first_run = true;
    let mut day = 0;
    while day < 7 {
        if days & (1 << day) == 0 {
            day += 1;
            continue;
        }
        let start = day;
        while day + 1 < 7 && days & (1 << (day + 1)) != 0 {
            day += 1;
        }
        if !first_run {
            f.write_str(",")?;
        }
        first_run = false;
        f.write_str(DAY_NAMES[start])?;
        if day > start {
            write!(f, "-{}", DAY_NAMES[day])?;
        }
        day += 1;
    }
    Ok(())
}

fn parse_days(text: &str) -> Result<u8, ValueError> {
    let mut mask = 0u8;
    let mut offset = 0;
    for part in text.split(',') {
        match part.split_once('-') {
            None => mask |= 1 << parse_day(part, offset)?,
            Some((a, b)) => {
                let first = parse_day(a, offset)?;
                let last = parse_day(b, offset + a.len() + 1)?;
                // `Fri-Mon` wraps over the weekend.
                let mut day = first;
                loop {
                    mask |= 1 << day;
                    if day == last {
                        break;
                    }
                    day = (day + 1) % 7;
                }
            }
        }
        offset += part.len() + 1;
    }
    Ok(mask)
}

fn parse_day(text: &str, offset: usize) -> Result<u8, ValueError> {
    DAY_NAMES
        .iter()
        .position(|d| d.eq_ignore_ascii_case(text))
        .map(|i| i as u8)
        .ok_or_else(|| {
            ValueError::at(
                ErrorKind::BadTime,
                offset,
                format!("`{text}` is not a day; write Mon, Tue, Wed, Thu, Fri, Sat or Sun"),
            )
        })
}

fn parse_range(text: &str) -> Result<(u16, u16), ValueError> {
    let (a, b) = text.split_once('-').ok_or_else(|| {
        ValueError::at(
            ErrorKind::BadTime,
            0,
            format!("`{text}`: write a range of times, as in `08:00-18:00`"),
        )
    })?;
    let start = parse_clock(a, 0, false)?;
    let end = parse_clock(b, a.len() + 1, true)?;
    if start == end {
        return Err(ValueError::at(
            ErrorKind::BadTime,
            0,
            format!("`{text}` is an empty window"),
        ));
    }
    Ok((start, end))
}

/// `HH:MM` as minutes of the day; `24:00` only where a range ends.
fn parse_clock(text: &str, offset: usize, may_be_midnight_end: bool) -> Result<u16, ValueError> {
    let bad = || {
        ValueError::at(
            ErrorKind::BadTime,
            offset,
            format!(
                "`{text}` is not a time of day; write HH:MM, 00:00 to 23:59{}",
                if may_be_midnight_end { " or 24:00" } else { "" }
            ),
        )
    };
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    match (h, m) {
        (24, 0) if may_be_midnight_end => Ok(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(first: &str, second: Option<&str>) -> TimeWindow {
        TimeWindow::parse(first, second).unwrap().0
    }

    fn at(text: &str) -> LocalTime {
        LocalTime::parse(text).unwrap()
    }

    #[test]
    fn office_hours() {
        let w = window("Mon-Fri", Some("08:00-18:00"));
        assert!(w.contains(at("Mon 08:00")));
        assert!(w.contains(at("Fri 17:59")));
        assert!(!w.contains(at("Fri 18:00")));
        assert!(!w.contains(at("Sat 12:00")));
        assert!(!w.contains(at("Tue 07:59")));
        assert_eq!(w.to_string(), "Mon-Fri 08:00-18:00");
    }

    #[test]
    fn overnight_window_belongs_to_the_day_it_starts() {
        let w = window("Fri", Some("22:00-06:00"));
        assert!(w.contains(at("Fri 23:00")));
        assert!(w.contains(at("Sat 05:59")));
        assert!(!w.contains(at("Sat 06:00")));
        assert!(!w.contains(at("Fri 05:00")));
        assert!(!w.contains(at("Thu 23:00")));
    }

    #[test]
    fn days_alone_times_alone_and_wrapping_day_ranges() {
        let weekend = window("Sat,Sun", None);
        assert!(weekend.contains(at("Sun 23:59")));
        assert!(!weekend.contains(at("Mon 00:00")));
        assert_eq!(weekend.to_string(), "Sat-Sun");
        let (w, used) = TimeWindow::parse("Fri-Mon", Some("host")).unwrap();
        assert_eq!(used, 1);
        assert_eq!(w.to_string(), "Mon,Fri-Sun");
        let lunch = window("12:00-13:00", None);
        assert!(lunch.contains(at("Wed 12:30")));
        assert_eq!(lunch.to_string(), "12:00-13:00");
        let until_midnight = window("Mon", Some("20:00-24:00"));
        assert!(until_midnight.contains(at("Mon 23:59")));
        assert!(!until_midnight.contains(at("Tue 00:00")));
        assert_eq!(window("Mon-Sun", None).to_string(), "Mon-Sun");
    }

    #[test]
    fn bad_times_point_at_the_culprit() {
        for (first, second, which, offset, needle) in [
            ("Mon-Fry", None, 0, 4, "not a day"),
            ("Mon", Some("8:00-18:00"), 1, 0, "HH:MM"),
            ("Mon", Some("08:00-25:00"), 1, 6, "not a time"),
            ("24:00-01:00", None, 0, 0, "00:00 to 23:59"),
            ("Mon", Some("08:00-08:00"), 1, 0, "empty window"),
            ("Mon", Some("08:00"), 1, 0, "range"),
        ] {
            let (e, token) = TimeWindow::parse(first, second).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadTime);
            assert_eq!((token, e.offset), (which, offset), "{first} {second:?}");
            assert!(e.message.contains(needle), "{}", e.message);
        }
        assert!(LocalTime::parse("Monday 10:00").is_err());
        assert!(LocalTime::parse("Mon").is_err());
        assert_eq!(at("sun 09:05").to_string(), "Sun 09:05");
    }
}
