//! Pacing a channel under its platform's rate limit: at most `count` messages in any `per`
//! window, counted on the messages the platform accepted. While the window is full the sender
//! waits, and what queues up meanwhile goes out merged into the next message, so a burst of
//! alerts costs a few messages instead of being refused (DingTalk blocks a robot for ten minutes
//! after its 21st message in a minute).
use std::{
    collections::VecDeque,
    fmt,
    time::{Duration, Instant},
};

/// `N/DURATION`, e.g. `20/1m`: at most N messages in any window of that length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl RateLimit {
    pub const fn new(count: u32, per_secs: u64) -> Self {
        Self {
            count,
            per: Duration::from_secs(per_secs),
        }
    }

    /// Parses `N/DURATION` (humantime duration: `1m`, `2s`, `500ms`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (count, per) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not N/DURATION (e.g. \"20/1m\")"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: {count:?} is not a whole number of messages"))?;
        let per = humantime::parse_duration(per.trim())
            .map_err(|e| format!("{text:?}: {per:?} is not a duration ({e})"))?;
        if !(1..=10_000).contains(&count) {
            return Err(format!("{text:?}: the count must be 1 to 10000"));
        }
        if per < Duration::from_millis(100) || per > Duration::from_secs(3600) {
            return Err(format!("{text:?}: the window must be 100ms to 1h"));
        }
        Ok(Self { count, per })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} per {}",
            self.count,
            humantime::format_duration(self.per)
        )
    }
}

/// The send times within each limit's window, and a hold set after the platform said "too
/// many".
#[derive(Debug)]
pub struct Pace {
    limits: Vec<RateLimit>,
    sent: VecDeque<Instant>,
    hold_until: Option<Instant>,
}

impl Pace {
    pub fn new(limits: Vec<RateLimit>) -> Self {
        Self {
            limits,
            sent: VecDeque::new(),
            hold_until: None,
        }
    }

    pub fn limits(&self) -> &[RateLimit] {
        &self.limits
    }

    /// How long to wait from `now` before the next message keeps within every limit.
    pub fn wait(&self, now: Instant) -> Duration {
        let mut until = self.hold_until.filter(|&h| h > now).unwrap_or(now);
        for limit in &self.limits {
            let n = limit.count as usize;
            // The n-th most recent send must have left the window.
            if self.sent.len() >= n
                && let Some(&nth) = self.sent.get(self.sent.len() - n)
            {
                until = until.max(nth + limit.per);
            }
        }
        until.saturating_duration_since(now)
    }

    /// A message went out at `now`.
    pub fn record(&mut self, now: Instant) {
        self.sent.push_back(now);
        let keep = self
            .limits
            .iter()
            .map(|l| l.count as usize)
            .max()
            .unwrap_or(0);
        let window = self.limits.iter().map(|l| l.per).max().unwrap_or_default();
        while self.sent.len() > keep
            || self
                .sent
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            self.sent.pop_front();
        }
    }

    /// The platform refused for sending too fast: nothing goes out before `until`.
    pub fn hold(&mut self, until: Instant) {
        self.hold_until = Some(self.hold_until.map_or(until, |h| h.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_with_the_reason() {
        assert_eq!(RateLimit::parse("20/1m").unwrap(), RateLimit::new(20, 60));
        assert_eq!(RateLimit::parse(" 3 / 2s ").unwrap(), RateLimit::new(3, 2));
        for (bad, why) in [
            ("20 per minute", "N/DURATION"),
            ("x/1m", "whole number"),
            ("20/soon", "not a duration"),
            ("0/1m", "1 to 10000"),
            ("5/2h", "100ms to 1h"),
        ] {
            let e = RateLimit::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(RateLimit::new(20, 60).to_string(), "20 per 1m");
    }

    /// No window of `per` ever holds more than `count` sends, however eager the sender.
    #[test]
    fn never_more_than_the_limit_in_any_window() {
        let t0 = Instant::now();
        let mut pace = Pace::new(vec![RateLimit::new(5, 1), RateLimit::new(20, 60)]);
        let mut now = t0;
        let mut sends = Vec::new();
        loop {
            now += pace.wait(now);
            if now >= t0 + Duration::from_secs(180) {
                break;
            }
            pace.record(now);
            sends.push(now);
        }
        for (i, &t) in sends.iter().enumerate() {
            let in_second = sends[i..]
                .iter()
                .take_while(|&&u| u < t + Duration::from_secs(1))
                .count();
            let in_minute = sends[i..]
                .iter()
                .take_while(|&&u| u < t + Duration::from_secs(60))
                .count();
            assert!(in_second <= 5 && in_minute <= 20, "at {:?}", t - t0);
        }
        // And the budget is used: 20 a minute over three minutes.
        assert_eq!(sends.len(), 60, "{:?}", sends.last().map(|&t| t - t0));
    }

    #[test]
    fn a_hold_delays_the_next_send() {
        let t0 = Instant::now();
        let mut pace = Pace::new(vec![RateLimit::new(20, 60)]);
        assert_eq!(pace.wait(t0), Duration::ZERO);
        pace.hold(t0 + Duration::from_secs(7));
        assert_eq!(
            pace.wait(t0 + Duration::from_secs(2)),
            Duration::from_secs(5)
        );
        assert_eq!(pace.wait(t0 + Duration::from_secs(8)), Duration::ZERO);
    }
}
