//! Summaries of latency samples: nearest-rank percentiles, in milliseconds.

use std::time::Duration;

use serde::Serialize;

/// min / p50 / p95 / max / mean of a series of samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

// === impl Summary ===

impl Summary {
    /// The summary of `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        let mut sorted: Vec<Duration> = samples.to_vec();
        sorted.sort_unstable();
        let first = *sorted.first()?;
        let last = *sorted.last()?;
        let total: Duration = sorted.iter().sum();
        let count = u32::try_from(sorted.len()).unwrap_or(u32::MAX);
        Some(Self {
            n: sorted.len(),
            min_ms: ms(first),
            p50_ms: ms(percentile(&sorted, 50)),
            p95_ms: ms(percentile(&sorted, 95)),
            max_ms: ms(last),
            mean_ms: ms(total / count),
        })
    }
}

/// Milliseconds as a float with microsecond resolution.
pub fn ms(duration: Duration) -> f64 {
    (duration.as_micros() as f64) / 1000.0
}

/// Nearest-rank percentile of an ascending, non-empty slice: the smallest sample such that at
/// least `pct` percent of the samples are less than or equal to it.
fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles_of_fifty() {
        // 1..=50 shuffled: p50 is the 25th smallest, p95 the 48th.
        let mut values: Vec<u64> = (1..=50).collect();
        values.reverse();
        values.swap(3, 40);
        let summary = Summary::of(&millis(&values)).expect("non-empty");
        assert_eq!(summary.n, 50);
        assert_eq!(summary.min_ms, 1.0);
        assert_eq!(summary.p50_ms, 25.0);
        assert_eq!(summary.p95_ms, 48.0);
        assert_eq!(summary.max_ms, 50.0);
        assert_eq!(summary.mean_ms, 25.5);
    }

    #[test]
    fn small_series() {
        let one = Summary::of(&millis(&[7])).expect("non-empty");
        assert_eq!((one.p50_ms, one.p95_ms, one.max_ms), (7.0, 7.0, 7.0));
        let two = Summary::of(&millis(&[10, 2])).expect("non-empty");
        assert_eq!((two.min_ms, two.p50_ms, two.p95_ms), (2.0, 2.0, 10.0));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn sub_millisecond_resolution() {
        assert_eq!(ms(Duration::from_micros(1_500)), 1.5);
    }
}
