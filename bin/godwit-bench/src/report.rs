//! What `godwit-bench create` measured, as a table or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::Summary;

/// Everything one run measured. Times are milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The image reference both sides ran (absolute).
    pub image: String,
    /// Machines per side in the sequential series.
    pub count: usize,
    /// Godwit: just before `POST /v1/apps/{app}/machines` → first `HTTP 200` from the machine.
    pub godwit_create_to_200: Summary,
    /// Godwit: the `POST` alone (it returns once the machine is started).
    pub godwit_create_call: Summary,
    /// Bare runc: just before `runc run -d` → first `HTTP 200` (bundle prepared beforehand).
    pub bare_runc_to_200: Summary,
    /// Bare runc: `OciRuntime::prepare` of the bundle (netns, veth, overlay, config.json),
    /// not part of `bare_runc_to_200`.
    pub bare_prepare: Summary,
    /// Godwit minus bare runc, per statistic.
    pub difference: Difference,
    pub throughput: Throughput,
    /// The raw samples, in creation order.
    pub samples: Samples,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Difference {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

/// Machines created concurrently until all answered 200.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Throughput {
    pub machines: usize,
    pub concurrency: usize,
    /// Rounds of at most this many machines, destroyed between rounds (untimed).
    pub batch: usize,
    /// Summed time of the rounds, from first POST to the last machine's first 200.
    pub seconds: f64,
    pub machines_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Samples {
    pub godwit_create_to_200_ms: Vec<f64>,
    pub godwit_create_call_ms: Vec<f64>,
    pub bare_runc_to_200_ms: Vec<f64>,
    pub bare_prepare_ms: Vec<f64>,
}

// === impl Difference ===

impl Difference {
    pub fn between(godwit: &Summary, bare: &Summary) -> Self {
        Self {
            p50_ms: godwit.p50_ms - bare.p50_ms,
            p95_ms: godwit.p95_ms - bare.p95_ms,
            min_ms: godwit.min_ms - bare.min_ms,
            max_ms: godwit.max_ms - bare.max_ms,
        }
    }
}

// === impl Report ===

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "godwit-bench create: {} machines each, image {}",
            self.count, self.image
        );
        let _ = writeln!(
            out,
            "{:<34} {:>9} {:>9} {:>9} {:>9}",
            "(milliseconds)", "p50", "p95", "min", "max"
        );
        let rows = [
            ("godwit create -> first 200", &self.godwit_create_to_200),
            ("  of which the create call", &self.godwit_create_call),
            ("bare runc run -> first 200", &self.bare_runc_to_200),
        ];
        for (name, s) in rows {
            let _ = writeln!(
                out,
                "{name:<34} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                s.p50_ms, s.p95_ms, s.min_ms, s.max_ms
            );
        }
        let d = &self.difference;
        let _ = writeln!(
            out,
            "{:<34} {:>+9.1} {:>+9.1} {:>+9.1} {:>+9.1}",
            "difference (godwit - bare)", d.p50_ms, d.p95_ms, d.min_ms, d.max_ms
        );
        let p = &self.bare_prepare;
        let _ = writeln!(
            out,
            "{:<34} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            "(bare: prepare, not timed above)", p.p50_ms, p.p95_ms, p.min_ms, p.max_ms
        );
        let t = &self.throughput;
        let _ = writeln!(
            out,
            "throughput: {} machines, {} at a time (rounds of {}), all answering 200 in {:.2} s \
             = {:.2} machines/s",
            t.machines, t.concurrency, t.batch, t.seconds, t.machines_per_s
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn summary(values_ms: &[u64]) -> Summary {
        let samples: Vec<Duration> = values_ms
            .iter()
            .map(|v| Duration::from_millis(*v))
            .collect();
        Summary::of(&samples).expect("non-empty")
    }

    #[test]
    fn table_shows_every_figure() {
        let godwit = summary(&[300, 320, 400]);
        let bare = summary(&[100, 110, 150]);
        let report = Report {
            image: "oci:/x".into(),
            count: 3,
            godwit_create_to_200: godwit,
            godwit_create_call: summary(&[250, 260, 330]),
            bare_runc_to_200: bare,
            bare_prepare: summary(&[40, 41, 42]),
            difference: Difference::between(&godwit, &bare),
            throughput: Throughput {
                machines: 20,
                concurrency: 4,
                batch: 8,
                seconds: 4.0,
                machines_per_s: 5.0,
            },
            samples: Samples::default(),
        };
        let table = report.table();
        assert!(table.contains("godwit create -> first 200"), "{table}");
        assert!(table.contains("320.0"), "{table}");
        assert!(table.contains("+210.0"), "{table}");
        assert!(table.contains("5.00 machines/s"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["difference"]["p50_ms"], 210.0);
        assert_eq!(json["throughput"]["machines_per_s"], 5.0);
    }
}
