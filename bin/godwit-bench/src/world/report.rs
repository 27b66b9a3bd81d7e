//! The `world` report: one table per figure. Targets are reported, never asserted.

use std::fmt::Write as _;

use serde::Serialize;

/// Everything one `godwit-bench world` run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorldReport {
    /// Regions of the world; the app runs in every one.
    pub regions: Vec<String>,
    /// Whether state used one bucket per region plus mirrors (else one bucket for all).
    pub regional_state: bool,
    pub state: Vec<StateRow>,
    pub requests: Vec<RequestRow>,
    pub extras: Vec<ExtraRow>,
    /// What was not measured, and why.
    pub notes: Vec<String>,
}

/// State propagation from one region's writer to one region's replica.
#[derive(Debug, Clone, Serialize)]
pub struct StateRow {
    pub writer: String,
    pub reader: String,
    /// Records seen / written.
    pub seen: usize,
    pub written: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub one_way_ms: f64,
    /// one way + 50 ms.
    pub target_ms: f64,
}

/// A simulated user's requests against the app running in every region.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRow {
    pub city: String,
    pub code: String,
    /// The nearest region with a machine (by the delay table).
    pub nearest: String,
    /// The region named in the answers (the machine that served them).
    pub served_by: String,
    /// Timed requests answered 200, of those sent.
    pub ok: usize,
    pub sent: usize,
    pub median_ms: f64,
    pub rtt_ms: f64,
    /// Light in fibre along the great circle, round trip.
    pub fibre_ms: f64,
    /// 1.1 × rtt + 3 ms.
    pub target_ms: f64,
}

/// A slower kind of request beside a warm local one of the same run.
#[derive(Debug, Clone, Serialize)]
pub struct ExtraRow {
    pub what: String,
    pub samples: usize,
    pub median_ms: f64,
    pub baseline: String,
    pub baseline_ms: f64,
    pub extra_ms: f64,
    pub note: String,
}

impl WorldReport {
    /// The human-readable tables.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let layout = if self.regional_state {
            "a bucket per region, mirrored into every other"
        } else {
            "one bucket for all regions (the world has one JetStream domain)"
        };
        let _ = writeln!(
            out,
            "world: regions {} (one host each); app `hello` runs one machine in each",
            self.regions.join(", ")
        );
        let _ = writeln!(
            out,
            "\n1. state propagation: agent write -> proxy replica ({layout})"
        );
        let _ = writeln!(
            out,
            "  {:<6} {:<6} {:>7} {:>9} {:>9} {:>9} {:>10}  met",
            "writer", "reader", "seen", "p50 ms", "p99 ms", "one-way", "target"
        );
        for row in &self.state {
            let _ = writeln!(
                out,
                "  {:<6} {:<6} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>10.1}  {}",
                row.writer,
                row.reader,
                format!("{}/{}", row.seen, row.written),
                row.p50_ms,
                row.p99_ms,
                row.one_way_ms,
                row.target_ms,
                met(row.seen == row.written && row.p99_ms <= row.target_ms)
            );
        }
        let _ = writeln!(
            out,
            "\n2. request latency: a user per city -> anycast edge -> hello (median of kept-alive requests)"
        );
        let _ = writeln!(
            out,
            "  {:<36} {:<7} {:<6} {:>6} {:>9} {:>8} {:>8} {:>8}  met",
            "user", "nearest", "served", "ok", "median", "rtt", "fibre", "target"
        );
        for row in &self.requests {
            let _ = writeln!(
                out,
                "  {:<36} {:<7} {:<6} {:>6} {:>9.1} {:>8.1} {:>8.1} {:>8.1}  {}",
                format!("{} ({})", row.city, row.code),
                row.nearest,
                row.served_by,
                format!("{}/{}", row.ok, row.sent),
                row.median_ms,
                row.rtt_ms,
                row.fibre_ms,
                row.target_ms,
                met(row.ok == row.sent && row.median_ms <= row.target_ms)
            );
        }
        let _ = writeln!(out, "\n3. extra latency against a warm local request (ms)");
        for row in &self.extras {
            let _ = writeln!(
                out,
                "  {}: median {:.1} over {} vs {} {:.1} -> extra {:.1}{}",
                row.what,
                row.median_ms,
                row.samples,
                row.baseline,
                row.baseline_ms,
                row.extra_ms,
                if row.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", row.note)
                }
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out
    }
}

fn met(yes: bool) -> &'static str {
    if yes { "yes" } else { "NO" }
}
