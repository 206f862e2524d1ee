//! The robust statistics the analyses share: quantiles, ranks, Spearman's correlation and the
//! Theil-Sen slope with Sen's confidence interval.

/// The `q` quantile (0..=1) of `values` by linear interpolation between order statistics (R's
/// type 7, numpy's default); None when empty. NaNs are left out.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

pub fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// Ranks from 1, ties sharing the mean of their ranks.
pub fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

/// Pearson's correlation; None for fewer than 3 pairs or a constant side.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len().min(y.len());
    if n < 3 {
        return None;
    }
    let (mx, my) = (
        x[..n].iter().sum::<f64>() / n as f64,
        y[..n].iter().sum::<f64>() / n as f64,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Spearman's rank correlation (Pearson's on ranks, so ties are handled).
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    pearson(&ranks(x), &ranks(y))
}

/// A slope with its 95 % confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slope {
    pub slope: f64,
    pub intercept: f64,
    pub low: f64,
    pub high: f64,
}

/// The Theil-Sen slope of y on x over the pairs within each group (`group[i]` names the
/// segment of point i: a restart starts a new one, and no pair spans two), with Sen's
/// distribution-free 95 % interval from the order statistics of the pairwise slopes. At most
/// `max_points` points are used, evenly spaced, to keep the pairs in the millions.
pub fn theil_sen(x: &[f64], y: &[f64], group: &[usize], max_points: usize) -> Option<Slope> {
    let n = x.len().min(y.len()).min(group.len());
    let step = n.div_ceil(max_points.max(2)).max(1);
    let idx: Vec<usize> = (0..n).step_by(step).collect();
    let mut slopes = Vec::new();
    let mut var_s = 0.0;
    let mut start = 0;
    while start < idx.len() {
        let mut end = start;
        while end + 1 < idx.len() && group[idx[end + 1]] == group[idx[start]] {
            end += 1;
        }
        let seg = &idx[start..=end];
        let m = seg.len() as f64;
        var_s += m * (m - 1.0) * (2.0 * m + 5.0) / 18.0;
        for (a, &i) in seg.iter().enumerate() {
            for &j in &seg[a + 1..] {
                let dx = x[j] - x[i];
                if dx != 0.0 {
                    slopes.push((y[j] - y[i]) / dx);
                }
            }
        }
        start = end + 1;
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let big_n = slopes.len() as f64;
    let slope = median_sorted(&slopes);
    // Sen (1968): the interval's ends are the slopes ranked (N -+ C) / 2, C = z sqrt(Var S).
    let c = 1.96 * var_s.sqrt();
    let at = |r: f64| slopes[(r.round().clamp(1.0, big_n) as usize) - 1];
    let (low, high) = (at((big_n - c) / 2.0), at((big_n + c) / 2.0 + 1.0));
    let residuals: Vec<f64> = idx.iter().map(|&i| y[i] - slope * x[i]).collect();
    let intercept = median(&residuals)?;
    Some(Slope {
        slope,
        intercept,
        low,
        high,
    })
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median absolute deviation from the median, scaled to estimate a normal's sigma.
pub fn mad_sigma(values: &[f64]) -> Option<f64> {
    let m = median(values)?;
    let dev: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    Some(1.4826 * median(&dev)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        assert!((quantile(&v, 0.95).unwrap() - 3.85).abs() < 1e-12);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn ties_share_their_mean_rank() {
        assert_eq!(ranks(&[10.0, 20.0, 10.0, 30.0]), [1.5, 3.0, 1.5, 4.0]);
    }

    #[test]
    fn spearman_is_one_for_any_increasing_relation() {
        let x: Vec<f64> = (0..50).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| v.powi(3)).collect();
        assert!((spearman(&x, &y).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn theil_sen_ignores_outliers_and_pairs_across_groups() {
        // Two segments of slope 2 with different levels (a restart), and one wild point.
        let x: Vec<f64> = (0..40).map(f64::from).collect();
        let group: Vec<usize> = (0..40).map(|i| usize::from(i >= 20)).collect();
        let mut y: Vec<f64> = x
            .iter()
            .zip(&group)
            .map(|(x, g)| 2.0 * x - 100.0 * *g as f64)
            .collect();
        y[5] = 1e6;
        let s = theil_sen(&x, &y, &group, 1000).unwrap();
        assert_eq!(s.slope, 2.0);
        assert!(s.low <= 2.0 && s.high >= 2.0);
    }
}
