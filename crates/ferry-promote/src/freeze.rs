//! Freeze windows: weekdays and local hours in a time zone during which promotions to an
//! environment are refused. Only promotions: a rollback is never blocked.
//!
//! A window `{ days = ["fri"], from = "18:00", to = "06:00", tz = "Europe/Berlin" }` starts on
//! each listed day at `from` local time and ends at `to`; a `to` not after `from` runs past
//! midnight into the next day. `to = "24:00"` is the end of the day. Time zones are IANA names
//! (chrono-tz, so windows follow daylight saving), `UTC`, or fixed offsets such as `+01:00`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, FixedOffset, Timelike, Utc, Weekday};

/// Environment names that get [`production_default`] when their config has no `freeze` key:
/// exactly `production` and `prod` (case-sensitive, as written in `[env.<name>]`).
pub const PRODUCTION_NAMES: [&str; 2] = ["production", "prod"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Zone {
    Named(chrono_tz::Tz),
    Fixed(FixedOffset),
}

/// One parsed freeze window.
#[derive(Debug, Clone, PartialEq)]
pub struct FreezeWindow {
    days: Vec<Weekday>,
    /// Minutes after local midnight.
    from: u32,
    /// Minutes after local midnight, up to 1440.
    to: u32,
    zone: Zone,
    zone_text: String,
}

impl FreezeWindow {
    /// Parses a window from the configuration; the error says what is wrong with it.
    pub fn parse(cfg: &ferry_core::config::FreezeWindow) -> Result<Self, String> {
        if cfg.days.is_empty() {
            return Err("a freeze window needs `days`, e.g. days = [\"fri\", \"sat\"]".into());
        }
        let days = cfg
            .days
            .iter()
            .map(|d| parse_day(d))
            .collect::<Result<Vec<_>, _>>()?;
        let from = parse_time(cfg.from.as_deref().unwrap_or("00:00"), "from")?;
        let to = parse_time(cfg.to.as_deref().unwrap_or("24:00"), "to")?;
        if from == 1440 {
            return Err("`from` must be before 24:00".into());
        }
        if from == to {
            return Err(format!(
                "`from` and `to` are both {}; for a whole day use from = \"00:00\", to = \"24:00\"",
                hhmm(from)
            ));
        }
        let zone_text = cfg.tz.clone().unwrap_or_else(|| "UTC".into());
        let zone = parse_zone(&zone_text)?;
        Ok(FreezeWindow {
            days,
            from,
            to,
            zone,
            zone_text,
        })
    }

    /// Whether `now` falls inside the window.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        let (weekday, minute) = match self.zone {
            Zone::Named(tz) => {
                let t = now.with_timezone(&tz);
                (t.weekday(), t.hour() * 60 + t.minute())
            }
            Zone::Fixed(off) => {
                let t = now.with_timezone(&off);
                (t.weekday(), t.hour() * 60 + t.minute())
            }
        };
        let starts_today = self.days.contains(&weekday);
        if self.from < self.to {
            starts_today && self.from <= minute && minute < self.to
        } else {
            (starts_today && minute >= self.from)
                || (self.days.contains(&weekday.pred()) && minute < self.to)
        }
    }

    /// `now` written in the window's time zone, for messages.
    pub fn local_time(&self, now: DateTime<Utc>) -> String {
        let fmt = "%a %Y-%m-%d %H:%M";
        match self.zone {
            Zone::Named(tz) => format!("{} {}", now.with_timezone(&tz).format(fmt), self.zone_text),
            Zone::Fixed(off) => {
                format!("{} {}", now.with_timezone(&off).format(fmt), self.zone_text)
            }
        }
    }
}

impl fmt::Display for FreezeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days: Vec<String> = self
            .days
            .iter()
            .map(|d| d.to_string().to_lowercase())
            .collect();
        write!(
            f,
            "{} {}-{} {}",
            days.join(","),
            hhmm(self.from),
            hhmm(self.to),
            self.zone_text
        )
    }
}

/// Production's default: no deploys on Friday, Saturday or Sunday, all day, UTC.
pub fn production_default() -> Vec<FreezeWindow> {
    vec![FreezeWindow {
        days: vec![Weekday::Fri, Weekday::Sat, Weekday::Sun],
        from: 0,
        to: 1440,
        zone: Zone::Named(chrono_tz::UTC),
        zone_text: "UTC".into(),
    }]
}

/// The windows of environment `name`: its `freeze` key when present (`[]` means never frozen),
/// else [`production_default`] for the names in [`PRODUCTION_NAMES`], else none.
pub fn windows_for(
    name: &str,
    configured: Option<&[ferry_core::config::FreezeWindow]>,
) -> Result<Vec<FreezeWindow>, String> {
    match configured {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, w)| FreezeWindow::parse(w).map_err(|e| format!("freeze[{i}]: {e}")))
            .collect(),
        None if PRODUCTION_NAMES.contains(&name) => Ok(production_default()),
        None => Ok(Vec::new()),
    }
}

fn parse_day(text: &str) -> Result<Weekday, String> {
    let lower = text.trim().to_ascii_lowercase();
    let short = lower.get(..3).unwrap_or(&lower);
    let day = Weekday::from_str(short).map_err(|_| {
        format!("`{text}` is not a weekday; use mon, tue, wed, thu, fri, sat or sun")
    })?;
    // Accept `fri` and `friday`, nothing in between or beyond.
    let full = match day {
        Weekday::Mon => "monday",
        Weekday::Tue => "tuesday",
        Weekday::Wed => "wednesday",
        Weekday::Thu => "thursday",
        Weekday::Fri => "friday",
        Weekday::Sat => "saturday",
        Weekday::Sun => "sunday",
    };
    if lower.len() == 3 || lower == full {
        Ok(day)
    } else {
        Err(format!(
            "`{text}` is not a weekday; use mon, tue, wed, thu, fri, sat or sun"
        ))
    }
}

fn parse_time(text: &str, what: &str) -> Result<u32, String> {
    let bad = || format!("`{what} = \"{text}\"` is not a time; use HH:MM between 00:00 and 24:00");
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_zone(text: &str) -> Result<Zone, String> {
    if text.eq_ignore_ascii_case("utc") || text == "Z" {
        return Ok(Zone::Named(chrono_tz::UTC));
    }
    if let Some(rest) = text.strip_prefix('+').or_else(|| text.strip_prefix('-')) {
        let sign = if text.starts_with('-') { -1 } else { 1 };
        let minutes = parse_time(rest, "tz").ok().filter(|m| *m < 1440);
        return minutes
            .and_then(|m| FixedOffset::east_opt(sign * (m as i32) * 60))
            .map(Zone::Fixed)
            .ok_or_else(|| format!("`tz = \"{text}\"` is not an offset; write e.g. +01:00"));
    }
    chrono_tz::Tz::from_str(text).map(Zone::Named).map_err(|_| {
        format!("`tz = \"{text}\"` is not a time zone; use an IANA name such as Europe/Berlin, UTC, or an offset such as +01:00")
    })
}

fn hhmm(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: &[&str], from: &str, to: &str, tz: &str) -> FreezeWindow {
        FreezeWindow::parse(&ferry_core::config::FreezeWindow {
            days: days.iter().map(|d| d.to_string()).collect(),
            from: Some(from.into()),
            to: Some(to.into()),
            tz: Some(tz.into()),
        })
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn windows_in_time_zones() {
        // 2026-11-27 is a Friday. In Berlin (UTC+1 in winter) Friday starts at Thu 23:00 UTC.
        let w = window(
            &["fri", "saturday", "SUN"],
            "00:00",
            "24:00",
            "Europe/Berlin",
        );
        assert!(w.contains(at("2026-11-26T23:30:00Z")));
        assert!(!w.contains(at("2026-11-26T22:59:00Z")));
        assert!(w.contains(at("2026-11-29T22:59:00Z")));
        assert!(!w.contains(at("2026-11-29T23:00:00Z")));
        // Summer time: UTC+2.
        assert!(w.contains(at("2026-07-02T22:30:00Z")));
        assert_eq!(w.to_string(), "fri,sat,sun 00:00-24:00 Europe/Berlin");

        // Past midnight: Friday 18:00 to Saturday 06:00 at +01:00.
        let night = window(&["fri"], "18:00", "06:00", "+01:00");
        assert!(night.contains(at("2026-11-27T17:00:00Z")));
        assert!(night.contains(at("2026-11-28T04:59:00Z")));
        assert!(!night.contains(at("2026-11-28T05:00:00Z")));
        assert!(!night.contains(at("2026-11-27T16:59:00Z")));
        // Thursday night is not Friday night.
        assert!(!night.contains(at("2026-11-26T20:00:00Z")));
    }

    #[test]
    fn production_defaults_and_explicit_empty() {
        let prod = windows_for("production", None).unwrap();
        assert!(prod[0].contains(at("2026-11-27T10:00:00Z")));
        assert!(!prod[0].contains(at("2026-11-30T10:00:00Z")));
        assert_eq!(windows_for("prod", None).unwrap(), prod);
        assert!(windows_for("Production", None).unwrap().is_empty());
        assert!(windows_for("staging", None).unwrap().is_empty());
        assert!(windows_for("production", Some(&[])).unwrap().is_empty());
    }

    #[test]
    fn bad_windows_are_explained() {
        let cfg =
            |days: &[&str], from: &str, to: &str, tz: &str| ferry_core::config::FreezeWindow {
                days: days.iter().map(|d| d.to_string()).collect(),
                from: Some(from.into()),
                to: Some(to.into()),
                tz: Some(tz.into()),
            };
        for (c, needle) in [
            (cfg(&["fr"], "00:00", "24:00", "UTC"), "weekday"),
            (cfg(&["fri"], "25:00", "24:00", "UTC"), "from"),
            (cfg(&["fri"], "9:00", "24:00", "UTC"), "from"),
            (cfg(&["fri"], "10:00", "10:00", "UTC"), "whole day"),
            (cfg(&["fri"], "00:00", "24:00", "Mars/Base"), "time zone"),
            (cfg(&[], "00:00", "24:00", "UTC"), "days"),
        ] {
            let err = FreezeWindow::parse(&c).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
