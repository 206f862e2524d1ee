//! The encoding of a chunk: the samples (or aggregates) of one series over one window, column by
//! column, each column compressed by pco (lossless numerical compression: regular timestamps
//! take next to no bits, integers and slowly moving gauges a few).
//!
//! Blob layout: a version byte, the row count (u32 LE), then each column as its byte length
//! (u32 LE) and its pco bytes. Raw chunks have two columns (time ms, value); rollup chunks six
//! (time ms, count, sum, min, max, last).
use anyhow::{Context as _, bail, ensure};

/// The blob's format version (the first byte).
const VERSION: u8 = 1;

/// pco's level: its default; higher levels gained under 2 % on daemon history for 2x the time.
const LEVEL: usize = pco::DEFAULT_COMPRESSION_LEVEL;

/// One raw sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub t_ms: i64,
    pub value: f64,
}

/// The aggregate of the raw samples in one step (a minute or an hour) starting at `t_ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Aggregate {
    pub t_ms: i64,
    pub count: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    /// The value of the step's latest sample.
    pub last: f64,
}

impl Aggregate {
    /// Equal to the bit: NaN sums and values compare equal to themselves (PartialEq says no).
    pub fn same_as(&self, other: &Self) -> bool {
        self.t_ms == other.t_ms
            && self.count == other.count
            && [self.sum, self.min, self.max, self.last]
                .iter()
                .zip([other.sum, other.min, other.max, other.last])
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }

    /// The aggregate of one sample.
    pub fn of(step_start: i64, s: Sample) -> Self {
        Self {
            t_ms: step_start,
            count: 1,
            sum: s.value,
            min: s.value,
            max: s.value,
            last: s.value,
        }
    }

    /// Adds a later sample.
    pub fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.last = value;
    }

    /// Adds the aggregate of a later step (minutes into an hour).
    pub fn merge(&mut self, later: &Aggregate) {
        self.count += later.count;
        self.sum += later.sum;
        self.min = self.min.min(later.min);
        self.max = self.max.max(later.max);
        self.last = later.last;
    }
}

/// Sorts `samples` by time and keeps, of samples at the same time, the one that came last: a
/// later write replaces an earlier one.
pub fn merge_last_wins(mut samples: Vec<Sample>) -> Vec<Sample> {
    // Stable: equal times keep their order, so the last of each run is the latest write.
    samples.sort_by_key(|s| s.t_ms);
    let mut merged: Vec<Sample> = Vec::with_capacity(samples.len());
    for s in samples {
        match merged.last_mut() {
            Some(last) if last.t_ms == s.t_ms => *last = s,
            _ => merged.push(s),
        }
    }
    merged
}

/// Aggregates `samples` (sorted by time) into steps of `step_ms`, one per step that has samples.
pub fn aggregate(samples: &[Sample], step_ms: i64) -> Vec<Aggregate> {
    let mut out: Vec<Aggregate> = Vec::new();
    for &s in samples {
        let start = s.t_ms.div_euclid(step_ms) * step_ms;
        match out.last_mut() {
            Some(a) if a.t_ms == start => a.add(s.value),
            _ => out.push(Aggregate::of(start, s)),
        }
    }
    out
}

/// Merges aggregates (sorted by time) into steps of `step_ms`: minutes into hours.
pub fn coarsen(rows: &[Aggregate], step_ms: i64) -> Vec<Aggregate> {
    let mut out: Vec<Aggregate> = Vec::new();
    for r in rows {
        let start = r.t_ms.div_euclid(step_ms) * step_ms;
        match out.last_mut() {
            Some(a) if a.t_ms == start => a.merge(r),
            _ => out.push(Aggregate { t_ms: start, ..*r }),
        }
    }
    out
}

pub fn encode_samples(samples: &[Sample]) -> anyhow::Result<Vec<u8>> {
    let times: Vec<i64> = samples.iter().map(|s| s.t_ms).collect();
    let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
    let mut out = header(samples.len())?;
    column(&mut out, &times)?;
    column(&mut out, &values)?;
    Ok(out)
}

pub fn decode_samples(blob: &[u8]) -> anyhow::Result<Vec<Sample>> {
    let mut r = Reader::new(blob)?;
    let times: Vec<i64> = r.column()?;
    let values: Vec<f64> = r.column()?;
    r.end()?;
    Ok(times
        .into_iter()
        .zip(values)
        .map(|(t_ms, value)| Sample { t_ms, value })
        .collect())
}

pub fn encode_aggregates(rows: &[Aggregate]) -> anyhow::Result<Vec<u8>> {
    let mut out = header(rows.len())?;
    column(&mut out, &rows.iter().map(|r| r.t_ms).collect::<Vec<_>>())?;
    column(&mut out, &rows.iter().map(|r| r.count).collect::<Vec<_>>())?;
    for f in [
        |r: &Aggregate| r.sum,
        |r: &Aggregate| r.min,
        |r: &Aggregate| r.max,
        |r: &Aggregate| r.last,
    ] {
        column(&mut out, &rows.iter().map(f).collect::<Vec<_>>())?;
    }
    Ok(out)
}

pub fn decode_aggregates(blob: &[u8]) -> anyhow::Result<Vec<Aggregate>> {
    let mut r = Reader::new(blob)?;
    let t: Vec<i64> = r.column()?;
    let count: Vec<i64> = r.column()?;
    let sum: Vec<f64> = r.column()?;
    let min: Vec<f64> = r.column()?;
    let max: Vec<f64> = r.column()?;
    let last: Vec<f64> = r.column()?;
    r.end()?;
    Ok((0..r.rows)
        .map(|i| Aggregate {
            t_ms: t[i],
            count: count[i],
            sum: sum[i],
            min: min[i],
            max: max[i],
            last: last[i],
        })
        .collect())
}

fn header(rows: usize) -> anyhow::Result<Vec<u8>> {
    let n = u32::try_from(rows).context("a chunk of over 4 billion rows")?;
    let mut out = vec![VERSION];
    out.extend_from_slice(&n.to_le_bytes());
    Ok(out)
}

fn column<T: pco::data_types::Number>(out: &mut Vec<u8>, values: &[T]) -> anyhow::Result<()> {
    let config = pco::ChunkConfig::default().with_compression_level(LEVEL);
    let bytes = pco::standalone::simple_compress(values, &config)
        .map_err(|e| anyhow::anyhow!("compressing a column: {e}"))?;
    let len = u32::try_from(bytes.len()).context("a column of over 4 GiB")?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(())
}

/// Reads a blob's columns, checking every length against what is there.
struct Reader<'a> {
    rest: &'a [u8],
    rows: usize,
}

impl<'a> Reader<'a> {
    fn new(blob: &'a [u8]) -> anyhow::Result<Self> {
        let Some((&version, rest)) = blob.split_first() else {
            bail!("an empty chunk");
        };
        ensure!(
            version == VERSION,
            "a chunk of format {version} (this monitor reads {VERSION})"
        );
        let mut r = Self { rest, rows: 0 };
        r.rows = r.u32()? as usize;
        Ok(r)
    }

    fn u32(&mut self) -> anyhow::Result<u32> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<4>()
            .context("a chunk cut short")?;
        self.rest = rest;
        Ok(u32::from_le_bytes(*head))
    }

    fn column<T: pco::data_types::Number>(&mut self) -> anyhow::Result<Vec<T>> {
        let len = self.u32()? as usize;
        ensure!(len <= self.rest.len(), "a chunk cut short");
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        let values: Vec<T> = pco::standalone::simple_decompress(bytes)
            .map_err(|e| anyhow::anyhow!("a corrupt column: {e}"))?;
        ensure!(
            values.len() == self.rows,
            "a column of {} values in a chunk of {} rows",
            values.len(),
            self.rows
        );
        Ok(values)
    }

    fn end(&self) -> anyhow::Result<()> {
        ensure!(
            self.rest.is_empty(),
            "{} bytes after a chunk's last column",
            self.rest.len()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 5 s from an hour boundary.
    fn samples(n: i64) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                t_ms: 1_699_999_200_000 + i * 5000,
                value: (i as f64 * 0.37).sin() * 40.0 + 50.0,
            })
            .collect()
    }

    #[test]
    fn samples_come_back_bit_for_bit() {
        let mut s = samples(4320);
        s.push(Sample {
            t_ms: s.last().unwrap().t_ms + 1,
            value: f64::NAN,
        });
        s.push(Sample {
            t_ms: s.last().unwrap().t_ms + 1,
            value: -0.0,
        });
        let back = decode_samples(&encode_samples(&s).unwrap()).unwrap();
        assert_eq!(back.len(), s.len());
        for (a, b) in s.iter().zip(&back) {
            assert_eq!(a.t_ms, b.t_ms);
            assert_eq!(a.value.to_bits(), b.value.to_bits());
        }
    }

    #[test]
    fn regular_integer_series_take_under_a_byte_a_sample() {
        // RSS in pages that moves now and then, every 5 s for 6 hours.
        let s: Vec<Sample> = (0..4320)
            .map(|i| Sample {
                t_ms: 1_700_000_000_000 + i * 5000,
                value: (100_000 + (i / 100) * 3) as f64 * 4096.0,
            })
            .collect();
        let blob = encode_samples(&s).unwrap();
        assert!(blob.len() < s.len(), "{} bytes for {}", blob.len(), s.len());
    }

    #[test]
    fn aggregates_are_those_of_their_samples() {
        let s = samples(4320);
        let minutes = aggregate(&s, 60_000);
        assert_eq!(minutes.len(), 360);
        assert!(minutes.iter().all(|m| m.count == 12));
        let first: Vec<f64> = s[..12].iter().map(|s| s.value).collect();
        assert_eq!(minutes[0].sum, first.iter().sum::<f64>());
        assert_eq!(minutes[0].last, first[11]);
        assert_eq!(
            minutes[0].min,
            first.iter().copied().fold(f64::MAX, f64::min)
        );
        let hours = coarsen(&minutes, 3_600_000);
        assert_eq!(hours.len(), 6);
        for h in &hours {
            let direct = aggregate(&s, 3_600_000)
                .into_iter()
                .find(|d| d.t_ms == h.t_ms)
                .unwrap();
            assert_eq!(
                (h.count, h.min, h.max, h.last),
                (direct.count, direct.min, direct.max, direct.last)
            );
            assert!((h.sum - direct.sum).abs() < 1e-9 * direct.sum.abs());
        }
        let back = decode_aggregates(&encode_aggregates(&minutes).unwrap()).unwrap();
        assert_eq!(back, minutes);
    }

    #[test]
    fn damaged_blobs_are_errors_not_panics() {
        let blob = encode_samples(&samples(100)).unwrap();
        for cut in [0, 1, 3, 5, 9, blob.len() / 2, blob.len() - 1] {
            assert!(decode_samples(&blob[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(decode_samples(&longer).is_err());
        let mut other = blob;
        other[0] = 9;
        assert!(decode_samples(&other).is_err());
    }
}
