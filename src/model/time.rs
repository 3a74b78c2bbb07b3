//! UTC times as text, without a date crate: RFC 3339 parsed (`--at`,
//! clients' times) and written (Subsonic's `created`, `starred`; the CLI's
//! listings). Proleptic Gregorian calendar, Howard Hinnant's day
//! algorithms. Pure.

/// Days since 1970-01-01 of a date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Why a time did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 3339 time (e.g. 2026-12-04T09:30:00Z)")]
pub struct TimeError(pub String);

/// `2026-12-04T09:30:00Z`, `…T09:30:00.250+01:00`, to UTC ms.
pub fn parse_rfc3339(s: &str) -> Result<i64, TimeError> {
    let t = s.trim();
    let bad = || TimeError(t.to_string());
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, TimeError> {
        let d = b.get(r).ok_or_else(bad)?;
        if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        std::str::from_utf8(d)
            .map_err(|_| bad())?
            .parse()
            .map_err(|_| bad())
    };
    let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if b.len() < 20 || !seps.iter().all(|&(i, c)| b[i] == c) || !matches!(b[10], b'T' | b't' | b' ')
    {
        return Err(bad());
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut ms = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let mut digits: String = t[start..i].chars().take(3).collect();
        while digits.len() < 3 {
            digits.push('0');
        }
        ms = digits.parse::<i64>().map_err(|_| bad())?;
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let v = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if sign == b'-' {
                -v
            } else {
                v
            }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(y, mo, d);
    if civil_from_days(days) != (y, mo, d) {
        return Err(bad()); // 31 February and the like
    }
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_min * 60;
    Ok(secs * 1000 + ms)
}

fn parts(ms: i64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (
        y,
        m,
        d,
        s / 3600,
        (s / 60) % 60,
        s % 60,
        ms.rem_euclid(1000),
    )
}

/// UTC ms as `2026-12-04T09:30:00.000Z`.
pub fn rfc3339(ms: i64) -> String {
    let (y, m, d, h, mi, s, milli) = parts(ms);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// UTC ms as `2026-12-04 09:30` (listings).
pub fn short(ms: i64) -> String {
    let (y, m, d, h, mi, _, _) = parts(ms);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_both_ways() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339("2026-12-04T09:30:00Z").unwrap(),
            1_796_376_600_000
        );
        assert_eq!(
            parse_rfc3339("2026-12-04T10:30:00.25+01:00").unwrap(),
            1_796_376_600_250
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00-00:30").unwrap(),
            951_784_200_000
        );
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-12-04",
            "2026-12-04T09:30:00",
            "2026-13-01T00:00:00Z",
            "x026-12-04T09:30:00Z",
            "2026-12-04T09:30:00+1:00",
            "2026-12-04T09:30:00.Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
        assert_eq!(short(1_796_376_600_000), "2026-12-04 09:30");
        assert_eq!(short(-1), "1969-12-31 23:59");
        assert_eq!(rfc3339(1_796_376_600_250), "2026-12-04T09:30:00.250Z");
        for ms in [0, 951_784_200_000, 1_796_376_600_250, -86_400_001] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)).unwrap(), ms);
        }
    }
}
