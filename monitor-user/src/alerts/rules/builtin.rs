//! The built-in rules: the seed's thresholds, leak and runaway detection, a target gone.
use std::time::Duration;

use super::*;

/// The built-in rules (the seed's thresholds, plus leak and runaway detection, and a target with
/// no live process). The `clear` margins are ours: a memory percentage hovering at 80 would
/// otherwise resolve and re-fire.
pub fn default_rules() -> Vec<Rule> {
    use Direction::{Above, Below};
    vec![
        Rule::builtin(
            "HighMemory",
            "memory_percent",
            Condition::Threshold {
                direction: Above,
                threshold: 80.0,
                clear: 75.0,
            },
            30,
        ),
        Rule::builtin(
            "CriticalMemory",
            "memory_percent",
            Condition::Threshold {
                direction: Above,
                threshold: 90.0,
                clear: 85.0,
            },
            0,
        )
        .with_severity(Severity::Critical),
        Rule::builtin(
            "HighCpu",
            "cpu_avg_1m",
            Condition::Threshold {
                direction: Above,
                threshold: 85.0,
                clear: 75.0,
            },
            60,
        ),
        // "Growth > 10 MB/min sustained 5 min": the slope over a 5 min window (whose r² says
        // the growth was steady across it), held for 5 more minutes, so a 5 min burst of
        // allocation, or a GC cycle as long as the window, is not called a leak.
        Rule::builtin(
            "MemoryLeak",
            "rss_mb",
            Condition::Trend {
                direction: Above,
                slope_per_min: 10.0,
                clear: 5.0,
                window: Duration::from_secs(300),
                min_r2: DEFAULT_MIN_R2,
            },
            300,
        ),
        // `for` 1 min: a startup ramp (idle to busy in a minute, then flat) also fits an
        // exponential briefly; one doubling every few minutes outlasts that.
        Rule::builtin(
            "CpuExponentialGrowth",
            "cpu_percent",
            Condition::Exponential {
                doubling_time_below: DEFAULT_DOUBLING,
                window: DEFAULT_EXP_WINDOW,
                min_r2: DEFAULT_MIN_R2,
                min_level: 5.0,
            },
            60,
        ),
        Rule::builtin(
            "FdLeak",
            "open_fds",
            Condition::Trend {
                direction: Above,
                slope_per_min: 5.0,
                clear: 2.0,
                window: DEFAULT_TREND_WINDOW,
                min_r2: DEFAULT_MIN_R2,
            },
            0,
        ),
        // `app_up == 0`, the one alert a dead target still raises (its others resolve). `for`
        // 30 s: a supervised restart (the process exits, its supervisor starts the next one,
        // `--comm` discovery finds it within a second) is no outage, a target still gone after
        // six 5 s samples is; HighMemory waits as long. Critical: nothing is being watched.
        Rule::builtin(
            "TargetDown",
            UP,
            Condition::Threshold {
                direction: Below,
                threshold: 1.0,
                clear: 1.0,
            },
            30,
        )
        .with_severity(Severity::Critical),
    ]
}

/// The defaults followed by the user's rules; a user rule with a default's name replaces it
/// in place.
pub fn with_defaults(user: Vec<Rule>) -> Vec<Rule> {
    let mut rules = default_rules();
    for rule in user {
        match rules.iter_mut().find(|r| r.name == rule.name) {
            Some(slot) => *slot = rule,
            None => rules.push(rule),
        }
    }
    rules
}
