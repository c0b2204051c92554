//! Days in UTC as people write them (`YYYY-MM-DD`), to and from milliseconds since the
//! Unix epoch: `lore gold export --since`, the quality page's days. Howard Hinnant's
//! civil-calendar algorithms, so no date crate is needed for two conversions.

const DAY_MS: i64 = 86_400_000;

/// Midnight (UTC) of `YYYY-MM-DD`, in ms since the epoch.
pub fn day_start_ms(day: &str) -> Result<i64, String> {
    let wrong = || format!("{day:?} is not a day: write YYYY-MM-DD");
    let parts: Vec<&str> = day.split('-').collect();
    let [y, m, d] = parts.as_slice() else { return Err(wrong()) };
    if (y.len(), m.len(), d.len()) != (4, 2, 2) {
        return Err(wrong());
    }
    let number = |s: &str| match s.bytes().all(|b| b.is_ascii_digit()) {
        true => s.parse::<i64>().map_err(|_| wrong()),
        false => Err(wrong()),
    };
    let (y, m, d) = (number(y)?, number(m)?, number(d)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(wrong());
    }
    Ok(days_from_civil(y, m, d) * DAY_MS)
}

/// The day (UTC) that `ms` falls on, as `YYYY-MM-DD`.
pub fn day_of(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_its_midnight_in_utc_both_ways_and_anything_else_is_refused() {
        assert_eq!(day_start_ms("1970-01-01"), Ok(0));
        assert_eq!(day_start_ms("2026-12-06"), Ok(1_796_515_200_000));
        assert_eq!(day_start_ms("2000-03-01"), Ok(951_868_800_000));
        assert_eq!(day_of(1_796_515_200_000 + DAY_MS - 1), "2026-12-06");
        assert_eq!(day_of(-1), "1969-12-31");
        for day in ["2000-02-29", "2024-12-31", "1999-01-01", "2100-03-01"] {
            assert_eq!(day_of(day_start_ms(day).unwrap()), day);
        }
        for wrong in ["2026-13-01", "2026-1-1", "yesterday", "2026-12-06T00:00", "", "+026-12-06"] {
            assert!(day_start_ms(wrong).unwrap_err().contains("YYYY-MM-DD"), "{wrong}");
        }
    }
}
