//! The kernel's CPU list format ("0-3,8,10-11"), used by `cpu/online`, cpusets and
//! `Cpus_allowed_list`: parsed into sets so the three can be intersected.

use std::collections::BTreeSet;

/// A set of CPU numbers.
pub type CpuSet = BTreeSet<u32>;

/// More CPU numbers than any kernel is built for (CONFIG_NR_CPUS is at most 8192): a list
/// naming one is not a CPU list, and refusing it keeps a garbage range from filling memory.
const MAX_CPU: u32 = 1 << 16;

/// The CPUs in `text`, or None when it is not a CPU list. An empty list (a v1 cpuset that
/// was never given CPUs) is an empty set.
pub fn parse(text: &str) -> Option<CpuSet> {
    let mut set = CpuSet::new();
    let text = text.trim();
    if text.is_empty() {
        return Some(set);
    }
    for part in text.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: u32 = lo.parse().ok()?;
        let hi: u32 = hi.parse().ok()?;
        if hi < lo || hi >= MAX_CPU {
            return None;
        }
        set.extend(lo..=hi);
    }
    Some(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_singles() {
        for (list, expected) in [
            ("0-1\n", vec![0, 1]),
            ("0,2-3\n", vec![0, 2, 3]),
            ("0\n", vec![0]),
            ("1-2,2-3", vec![1, 2, 3]),
            ("\n", vec![]),
        ] {
            assert_eq!(
                parse(list),
                Some(expected.into_iter().collect()),
                "{list:?}"
            );
        }
        assert_eq!(parse("0-63,128").map(|s| s.len()), Some(65));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["3-1", "a-b", "0,,1", "0-", "-1", "0-4294967295", "1 2"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
