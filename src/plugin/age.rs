//! Ages the way kubectl prints them, and `--since` values.

use jiff::{SignedDuration, Timestamp};

/// kubectl's `duration.HumanDuration`: `45s`, `5m30s`, `3h`, `2d4h`, `1y20d`.
pub fn human(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{days}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of an RFC 3339 time at `now` (`<unknown>` when it does not parse).
pub fn age(at: &str, now: Timestamp) -> String {
    match at.parse::<Timestamp>() {
        Ok(t) => human(now.duration_since(t)),
        Err(_) => "<unknown>".to_owned(),
    }
}

/// `--since`: a duration back from `now` (`90s`, `30m`, `2h`, `1d`, `1w`, or combined as
/// `1h30m`) or an RFC 3339 time.
pub fn parse_since(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    let text = text.trim();
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let bad = || format!("invalid --since {text:?}: want a duration like 2h, 1d, 1h30m or an RFC 3339 time");
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n.checked_mul(unit).and_then(|s| total.checked_add(s)).ok_or_else(bad)?;
    }
    if !digits.is_empty() || text.is_empty() {
        return Err(bad());
    }
    now.checked_sub(SignedDuration::from_secs(total)).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> String {
        human(SignedDuration::from_secs(s))
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(secs(-5), "<invalid>");
        assert_eq!(secs(-1), "0s");
        assert_eq!(secs(45), "45s");
        assert_eq!(secs(119), "119s");
        assert_eq!(secs(150), "2m30s");
        assert_eq!(secs(600), "10m");
        assert_eq!(secs(3 * 3600), "3h");
        assert_eq!(secs(3 * 3600 + 60 * 59), "3h59m");
        assert_eq!(secs(8 * 3600 + 1), "8h");
        assert_eq!(secs(50 * 3600), "2d2h");
        assert_eq!(secs(10 * 86_400), "10d");
        assert_eq!(secs(800 * 86_400), "2y70d");
        assert_eq!(secs(9 * 365 * 86_400), "9y");
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now: Timestamp = "2026-11-27T12:00:00Z".parse().expect("ts");
        assert_eq!(parse_since("2h", now), Ok("2026-11-27T10:00:00Z".parse().expect("ts")));
        assert_eq!(parse_since("1d", now), Ok("2026-11-26T12:00:00Z".parse().expect("ts")));
        assert_eq!(parse_since("1h30m", now), Ok("2026-11-27T10:30:00Z".parse().expect("ts")));
        assert_eq!(parse_since("2026-11-01T00:00:00Z", now), Ok("2026-11-01T00:00:00Z".parse().expect("ts")));
        assert!(parse_since("2x", now).is_err());
        assert!(parse_since("h", now).is_err());
        assert!(parse_since("12", now).is_err());
        assert!(parse_since("", now).is_err());
    }
}
