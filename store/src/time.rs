//! Times: nanoseconds since the Unix epoch, and the sortable `YYYYMMDD-HHMMSS` set names.

/// Now, in nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Civil date (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYYMMDD-HHMMSS` in UTC for a time in nanoseconds since the epoch.
#[must_use]
pub fn sortable_name(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A duration in nanoseconds for people: `3 s`, `5 min`, `2 h`, `4 days`.
#[must_use]
pub fn human_duration(ns: i64) -> String {
    let s = ns.max(0) / 1_000_000_000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// Whether `s` has the form of a sortable set name.
#[must_use]
pub fn is_sortable_name(s: &str) -> bool {
    let (base, number) = match s.get(15..) {
        Some(rest) if !rest.is_empty() => (&s[..15], rest.strip_prefix('-')),
        _ => (s, Some("2")),
    };
    let b = base.as_bytes();
    b.len() == 15
        && b.iter().enumerate().all(|(i, c)| if i == 8 { *c == b'-' } else { c.is_ascii_digit() })
        && number
            .is_some_and(|n| (1..=9).contains(&n.len()) && n.bytes().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sortable_names_are_utc_civil_times() {
        assert_eq!(sortable_name(0), "19700101-000000");
        // 2026-11-21T02:00:00Z
        assert_eq!(sortable_name(1_795_226_400_000_000_000), "20261121-020000");
        // 2000-02-29T23:59:59Z (leap day)
        assert_eq!(sortable_name(951_868_799_000_000_000), "20000229-235959");
        assert_eq!(sortable_name(-1_000_000_000), "19691231-235959");
        assert!(is_sortable_name("20261121-020000"));
        assert!(!is_sortable_name("20261121-02000"));
        assert!(!is_sortable_name("20261121x020000"));
    }
}
