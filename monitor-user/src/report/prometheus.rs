//! Prometheus (or Thanos, Mimir, VictoriaMetrics behind the same HTTP API) as a report's source,
//! so a fleet that keeps history there gets the same report for any host.
//!
//! Each series is read through `query_range` already aggregated per minute on the server
//! (`avg_over_time`, `min_over_time`, `max_over_time` over `[1m]`, and the plain selector for the
//! last value), or per hour for ranges past 90 days. Requests are split so that none asks for
//! more than 10,000 points per series (Prometheus refuses over 11,000).
use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::{
    DEFAULT_RANGE_MS,
    history::{DAY_MS, HOUR_MS, MINUTE_MS, Step, Steps},
    source::{Kind, Labeled, Source},
};

/// Per step start: last, mean, min and max (NaN where a query had none).
type StepColumns = BTreeMap<i64, [f64; 4]>;

/// Points per request and series, under Prometheus' limit of 11,000.
const MAX_POINTS: i64 = 10_000;

pub struct PrometheusSource {
    base: String,
    /// Extra matchers for every query, without braces (`job="monitor",instance="h:8001"`).
    matchers: String,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct Response<T> {
    status: String,
    data: Option<T>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Matrix {
    result: Vec<MatrixSeries>,
}

#[derive(Deserialize)]
struct MatrixSeries {
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

impl PrometheusSource {
    /// `url` is the server's base (http://host:9090); `selector` extra matchers in braces
    /// (`{job="monitor"}`) that pick the monitor instance when several scrape the same target.
    pub fn new(url: &str, selector: Option<&str>) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "--prometheus {url:?}: give the server's URL, such as http://127.0.0.1:9090"
        );
        let matchers = match selector {
            None => String::new(),
            Some(s) => {
                let inner = s
                    .trim()
                    .strip_prefix('{')
                    .and_then(|s| s.strip_suffix('}'))
                    .with_context(|| {
                        format!("--selector {s:?}: give label matchers in braces, such as {{job=\"monitor\"}}")
                    })?;
                inner.trim().trim_end_matches(',').to_owned()
            }
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            base,
            matchers,
            agent,
        })
    }

    fn selector(&self, name: &str, target: &str) -> String {
        let mut s = format!("{name}{{target=\"{}\"", escape(target));
        if !self.matchers.is_empty() {
            s.push(',');
            s.push_str(&self.matchers);
        }
        s.push('}');
        s
    }

    fn get<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        for (k, v) in query {
            req = req.query(k, v);
        }
        let mut resp = req
            .call()
            .with_context(|| format!("asking Prometheus at {url}"))?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading Prometheus' answer from {url}"))?;
        let parsed: Response<T> = serde_json::from_str(&body).with_context(|| {
            format!(
                "Prometheus at {url} answered {status} with something that is not its API's JSON: {}",
                body.chars().take(200).collect::<String>()
            )
        })?;
        if parsed.status != "success" {
            bail!(
                "Prometheus at {url} refused {query:?}: {}",
                parsed.error.unwrap_or_else(|| status.to_string())
            );
        }
        parsed
            .data
            .with_context(|| format!("Prometheus at {url} answered without data"))
    }

    /// `query` evaluated every `step_ms` over [from, to), in requests of at most MAX_POINTS.
    fn range(
        &self,
        query: &str,
        from: i64,
        to: i64,
        step_ms: i64,
    ) -> anyhow::Result<Vec<MatrixSeries>> {
        let mut by_labels: BTreeMap<BTreeMap<String, String>, Vec<(f64, String)>> = BTreeMap::new();
        let mut start = from;
        while start < to {
            let end = (start + (MAX_POINTS - 1) * step_ms).min(to - 1);
            let m: Matrix = self.get(
                "/api/v1/query_range",
                &[
                    ("query", query.to_owned()),
                    ("start", seconds(start)),
                    ("end", seconds(end)),
                    ("step", format!("{}s", step_ms / 1000)),
                ],
            )?;
            for s in m.result {
                by_labels.entry(s.metric).or_default().extend(s.values);
            }
            start = end + step_ms;
        }
        Ok(by_labels
            .into_iter()
            .map(|(metric, values)| MatrixSeries { metric, values })
            .collect())
    }
}

fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The labels of a result other than the name, target and the scrape's own.
fn labels(metric: &BTreeMap<String, String>) -> Vec<(String, String)> {
    metric
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "target" | "job" | "instance"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Source for PrometheusSource {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn targets(&mut self, name: &str) -> anyhow::Result<Vec<String>> {
        let matcher = if self.matchers.is_empty() {
            name.to_owned()
        } else {
            format!("{name}{{{}}}", self.matchers)
        };
        self.get("/api/v1/label/target/values", &[("match[]", matcher)])
    }

    fn series(
        &mut self,
        target: &str,
        name: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<(Kind, Vec<Labeled>)> {
        let kind = if name.ends_with("_total") {
            Kind::Counter
        } else {
            Kind::Gauge
        };
        // Minutes up to the default range, hours past it. Each step is evaluated a millisecond
        // before its end: Prometheus' windows are open at the start, so a sample at a minute's
        // first millisecond falls in that minute, as in the local store.
        let step_ms = if to_ms - from_ms > DEFAULT_RANGE_MS + HOUR_MS {
            HOUR_MS
        } else {
            MINUTE_MS
        };
        let window = format!("{}s", step_ms / 1000);
        let sel = self.selector(name, target);
        let from = from_ms.div_euclid(step_ms) * step_ms + step_ms - 1;
        let to = to_ms + step_ms;
        // Steps exist where the window held a sample: last_over_time has nothing in a gap, where
        // the plain selector would repeat the last value for five minutes.
        let mut queries = vec![("last", format!("last_over_time({sel}[{window}])"))];
        if kind == Kind::Gauge {
            queries.push(("mean", format!("avg_over_time({sel}[{window}])")));
            queries.push(("min", format!("min_over_time({sel}[{window}])")));
            queries.push(("max", format!("max_over_time({sel}[{window}])")));
        }
        let mut steps: BTreeMap<Vec<(String, String)>, StepColumns> = BTreeMap::new();
        for (i, (_, q)) in queries.iter().enumerate() {
            for s in self.range(q, from, to, step_ms)? {
                let per = steps.entry(labels(&s.metric)).or_default();
                for (t, v) in s.values {
                    let Ok(v) = v.parse::<f64>() else { continue };
                    let start = (t * 1000.0).round() as i64 + 1 - step_ms;
                    per.entry(start).or_insert([f64::NAN; 4])[i] = v;
                }
            }
        }
        let out = steps
            .into_iter()
            .map(|(labels, per)| Labeled {
                labels,
                steps: Steps::from_unordered(per.into_iter().filter_map(|(t_ms, v)| {
                    let last = v[0];
                    if last.is_nan() {
                        return None;
                    }
                    let or_last = |x: f64| if x.is_nan() { last } else { x };
                    Some(Step {
                        t_ms,
                        span_ms: step_ms,
                        mean: or_last(v[1]),
                        min: or_last(v[2]),
                        max: or_last(v[3]),
                        last,
                    })
                })),
            })
            .collect();
        Ok((kind, out))
    }

    fn last_ms(&mut self, target: &str, name: &str) -> anyhow::Result<Option<i64>> {
        // The last day with samples (within the longest retention), then the newest sample's
        // own timestamp in it.
        let sel = self.selector(name, target);
        let now = crate::store::unix_ms(std::time::SystemTime::now());
        let days = self.range(
            &format!("count_over_time({sel}[1d])"),
            now - 730 * DAY_MS,
            now + 1,
            DAY_MS,
        )?;
        let Some(day_end) = days
            .iter()
            .filter_map(|s| s.values.last().map(|(t, _)| (t * 1000.0).round() as i64))
            .max()
        else {
            return Ok(None);
        };
        let times = self.range(
            &format!("timestamp({sel})"),
            day_end - DAY_MS,
            day_end + 1,
            MINUTE_MS,
        )?;
        Ok(times
            .iter()
            .flat_map(|s| s.values.iter())
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .map(|t| (t * 1000.0).round() as i64)
            .max())
    }
}
