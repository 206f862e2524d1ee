//! The local store as a report's source: minutes from the raw samples where they are still
//! kept, else from the minute aggregates, else hours from the hour aggregates.
use std::collections::BTreeSet;

use super::{
    history::{HOUR_MS, MINUTE_MS, Step, Steps},
    source::{Kind, Labeled, Source},
};
use crate::store::{
    chunk::{self, Aggregate},
    db::{Store, Tier},
};

pub struct LocalSource {
    store: Store,
}

impl LocalSource {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn step(a: &Aggregate, span_ms: i64) -> Step {
    Step {
        t_ms: a.t_ms,
        span_ms,
        mean: if a.count > 0 {
            a.sum / a.count as f64
        } else {
            a.last
        },
        min: a.min,
        max: a.max,
        last: a.last,
    }
}

impl Source for LocalSource {
    fn name(&self) -> &'static str {
        "local"
    }

    fn targets(&mut self, name: &str) -> anyhow::Result<Vec<String>> {
        let set: BTreeSet<String> = self
            .store
            .series(None)?
            .into_iter()
            .filter(|s| s.key.name == name)
            .map(|s| s.key.target)
            .collect();
        Ok(set.into_iter().collect())
    }

    fn series(
        &mut self,
        target: &str,
        name: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<(Kind, Vec<Labeled>)> {
        let mut kind = Kind::Gauge;
        let mut out = Vec::new();
        for s in self.store.series(Some(target))? {
            if s.key.name != name {
                continue;
            }
            if s.kind == "counter" {
                kind = Kind::Counter;
            }
            let raw = self.store.raw(s.id, from_ms, to_ms)?;
            let from_raw = chunk::aggregate(&raw, MINUTE_MS);
            let minutes = self.store.aggregates(s.id, Tier::Minute, from_ms, to_ms)?;
            let hours = self.store.aggregates(s.id, Tier::Hour, from_ms, to_ms)?;
            // Hours only where no minute is left; raw minutes over the stored ones (the same
            // numbers once sealed, and the only ones for the head).
            let minute_hours: BTreeSet<i64> = minutes
                .iter()
                .chain(&from_raw)
                .map(|a| a.t_ms.div_euclid(HOUR_MS))
                .collect();
            let steps = hours
                .iter()
                .filter(|h| !minute_hours.contains(&h.t_ms.div_euclid(HOUR_MS)))
                .map(|h| step(h, HOUR_MS))
                .chain(minutes.iter().map(|m| step(m, MINUTE_MS)))
                .chain(from_raw.iter().map(|m| step(m, MINUTE_MS)));
            out.push(Labeled {
                labels: parse_labels(&s.key.labels),
                steps: Steps::from_unordered(steps),
            });
        }
        Ok((kind, out))
    }

    fn last_ms(&mut self, target: &str, name: &str) -> anyhow::Result<Option<i64>> {
        let mut last = None;
        for s in self.store.series(Some(target))? {
            if s.key.name == name {
                last = last.max(self.store.last_sample_ms(s.id)?);
            }
        }
        Ok(last)
    }
}

/// The pairs of a stored labels text (`a="x",b="y\"z"`), values unescaped.
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').to_owned();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = rest.len() - eq - 2;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key, value));
        rest = &rest[eq + 2 + end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_back_from_their_canonical_text() {
        let key = crate::store::series::SeriesKey::new(
            "t",
            "n",
            &[("route", "/a\"b\\c\nd"), ("method", "GET")],
        );
        assert_eq!(
            parse_labels(&key.labels),
            [
                ("method".to_owned(), "GET".to_owned()),
                ("route".to_owned(), "/a\"b\\c\nd".to_owned())
            ]
        );
    }
}
