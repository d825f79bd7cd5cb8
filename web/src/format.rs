//! Numbers and times as people read them: SI units (1 kB = 1000 B, as network counters are
//! usually shown), three significant digits, UTC clock times.

use chrono::DateTime;

/// A byte count: `512 B`, `1.23 kB`, `45.6 MB`.
pub fn bytes(count: u64) -> String {
    // u64 → f64 loses precision only beyond 2^53 bytes (9 PB), where 3 digits are shown anyway.
    si(count as f64, "B")
}

/// A rate in bytes per second: `0 B/s`, `12.3 kB/s`.
pub fn rate(bytes_per_second: f64) -> String {
    si(bytes_per_second, "B/s")
}

fn si(value: f64, unit: &str) -> String {
    const PREFIXES: [&str; 6] = ["", "k", "M", "G", "T", "P"];
    let mut value = if value.is_finite() {
        value.max(0.0)
    } else {
        0.0
    };
    if value < 999.5 {
        return format!("{value:.0} {unit}");
    }
    let mut prefix = 0;
    while value >= 999.5 && prefix < PREFIXES.len() - 1 {
        value /= 1000.0;
        prefix += 1;
    }
    let prefix = PREFIXES[prefix];
    if value < 9.995 {
        format!("{value:.2} {prefix}{unit}")
    } else if value < 99.95 {
        format!("{value:.1} {prefix}{unit}")
    } else {
        format!("{value:.0} {prefix}{unit}")
    }
}

/// A count with thousands separators: `18,234`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A duration, its two largest units: `45 s`, `12 min 5 s`, `4 h 12 min`, `3 d 4 h`.
pub fn duration(seconds: u64) -> String {
    let (days, hours) = (seconds / 86_400, seconds / 3600 % 24);
    let (minutes, secs) = (seconds / 60 % 60, seconds % 60);
    if days > 0 {
        format!("{days} d {hours} h")
    } else if hours > 0 {
        format!("{hours} h {minutes} min")
    } else if minutes > 0 {
        format!("{minutes} min {secs} s")
    } else {
        format!("{secs} s")
    }
}

/// The UTC clock time of a Unix time: `14:02:09`.
pub fn clock(unix: u64) -> String {
    utc(unix).map_or_else(|| "?".to_owned(), |t| t.format("%H:%M:%S").to_string())
}

/// A Unix time for a `<time datetime>` attribute: `2026-11-25T14:02:09Z`.
pub fn iso(unix: u64) -> String {
    utc(unix).map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// A Unix time as date and clock: `2026-11-25 14:02:09 UTC`.
pub fn date_time(unix: u64) -> String {
    utc(unix).map_or_else(
        || "?".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

fn utc(unix: u64) -> Option<DateTime<chrono::Utc>> {
    DateTime::from_timestamp(i64::try_from(unix).ok()?, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_si_units_with_three_digits() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1000), "1.00 kB");
        assert_eq!(bytes(1234), "1.23 kB");
        assert_eq!(bytes(45_600_000), "45.6 MB");
        assert_eq!(bytes(999_999), "1.00 MB");
        assert_eq!(bytes(123_000_000_000), "123 GB");
        assert_eq!(bytes(u64::MAX), "18447 PB");
    }

    #[test]
    fn rates_never_negative_or_nan() {
        assert_eq!(rate(12_300.0), "12.3 kB/s");
        assert_eq!(rate(-5.0), "0 B/s");
        assert_eq!(rate(f64::NAN), "0 B/s");
    }

    #[test]
    fn counts_have_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(18_234), "18,234");
        assert_eq!(count(1_000_000), "1,000,000");
    }

    #[test]
    fn durations_show_two_units() {
        assert_eq!(duration(45), "45 s");
        assert_eq!(duration(725), "12 min 5 s");
        assert_eq!(duration(4 * 3600 + 12 * 60 + 7), "4 h 12 min");
        assert_eq!(duration(3 * 86_400 + 4 * 3600 + 5), "3 d 4 h");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(clock(1_764_079_329), "14:02:09");
        assert_eq!(iso(1_764_079_329), "2025-11-25T14:02:09Z");
        assert_eq!(date_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(clock(u64::MAX), "?");
    }
}
