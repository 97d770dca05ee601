//! Parsers for the configuration's small value types: durations, byte sizes and rates.

use std::time::Duration;

/// Parses a humantime duration (`30s`, `5m`, `1h 30m`).
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("not a duration ({e}); examples: \"30s\", \"5m\""))
}

/// Parses a byte size: a plain number of bytes or a number with `B`, `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`.
pub fn byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("not a size: {text:?}; examples: \"64KiB\", \"10MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}; use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {text:?} is too large"))
}

/// A request rate such as `50/s` or `3000/min`: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per period (at least 1).
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// Parses `N/s`, `N/sec`, `N/m`, `N/min`, `N/h`, `N/hour`, or `N/<humantime>` such as `N/10s`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let err = || format!("not a rate: {text:?}; examples: \"50/s\", \"3000/min\"");
        let (count, per) = text.split_once('/').ok_or_else(err)?;
        let count: u32 = count.trim().parse().map_err(|_| err())?;
        if count == 0 {
            return Err("a rate must allow at least 1 request".into());
        }
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|_| err())?,
        };
        if per.is_zero() {
            return Err(err());
        }
        Ok(Rate { count, per })
    }

    /// The emission interval: time between two requests at the steady rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }

    /// Requests per second as a float (for display and headers).
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(byte_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(byte_size("64KiB").unwrap(), 65536);
        assert_eq!(byte_size("123").unwrap(), 123);
        assert!(byte_size("10 parsecs").is_err());
    }

    #[test]
    fn rates() {
        let r = Rate::parse("3000/min").unwrap();
        assert_eq!(r.interval(), Duration::from_millis(20));
        assert_eq!(Rate::parse("50/s").unwrap().count, 50);
        assert!(Rate::parse("0/s").is_err());
        assert!(Rate::parse("fast").is_err());
    }
}
