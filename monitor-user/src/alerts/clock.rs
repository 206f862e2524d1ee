//! The two clocks the alert stages read. Every duration (`for`, repeats, `min_firing`, trend
//! windows, spike context) is measured on the monotonic clock, which NTP steps and `date -s`
//! leave alone; the wall clock only stamps what people and receivers see (`startsAt`,
//! `endsAt`, event times). On the wall clock a step back would stop repeats (Alertmanager then
//! resolves alerts that still fire) and a step forward would fire pending alerts early.
use std::time::{Duration, Instant, SystemTime};

/// One reading of both clocks, taken by the caller so that tests can step one without the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Now {
    pub fn read() -> Self {
        Self {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The wall time of `at` (an instant of this process), as the wall clock reads now: how an
    /// instant is saved, since an `Instant` means nothing to the next process.
    pub fn wall_of(&self, at: Instant) -> SystemTime {
        let shifted = if at <= self.mono {
            self.wall.checked_sub(self.mono - at)
        } else {
            self.wall.checked_add(at - self.mono)
        };
        shifted.unwrap_or(self.wall)
    }

    /// The instant at which the wall clock read `wall`, taking its reading now as true: how a
    /// saved time is loaded. `None` when `wall` is ahead of the wall clock (it was stepped back
    /// since, or the state comes from another machine): when it happened is then unknown, and
    /// each caller picks the safe side. A wall clock stepped forward while the daemon was down
    /// makes saved times look older than they are; nothing can tell that apart from downtime.
    pub fn instant_of(&self, wall: SystemTime) -> Option<Instant> {
        let ago = self.wall.duration_since(wall).ok()?;
        self.mono.checked_sub(ago)
    }

    /// `d` before now on the monotonic clock; now, on a platform whose clock cannot go back
    /// that far.
    pub fn mono_ago(&self, d: Duration) -> Instant {
        self.mono.checked_sub(d).unwrap_or(self.mono)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip_through_wall_time() {
        let now = Now::read();
        let earlier = now.mono - Duration::from_secs(90);
        let wall = now.wall_of(earlier);
        assert_eq!(
            now.wall.duration_since(wall).unwrap(),
            Duration::from_secs(90)
        );
        // The next process, 30 s later by both clocks, with its own monotonic origin.
        let later = Now {
            mono: Instant::now() + Duration::from_secs(1000),
            wall: now.wall + Duration::from_secs(30),
        };
        let back = later.instant_of(wall).unwrap();
        assert_eq!(later.mono - back, Duration::from_secs(120));
        // A saved time ahead of the wall clock cannot be placed.
        assert_eq!(later.instant_of(later.wall + Duration::from_secs(1)), None);
        assert_eq!(later.instant_of(later.wall), Some(later.mono));
    }
}
