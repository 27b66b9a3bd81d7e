//! Measured city-to-city delays: the region list and round-trip matrix from `data/`, and the
//! one-way delay (`rtt / 2`) the WAN router holds each packet for.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

const REGIONS_CSV: &str = include_str!("../data/regions.csv");
const RTT_CSV: &str = include_str!("../data/rtt.csv");

/// One-way delay between two hosts in the same city (a metro network hop).
pub const SAME_CITY_ONE_WAY: Duration = Duration::from_micros(100);

/// A region: a three-letter code and the city that stands for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// Three-letter code, e.g. `ams`.
    pub code: String,
    /// City name as measured, e.g. `Amsterdam`.
    pub city: String,
    pub latitude: f64,
    pub longitude: f64,
}

/// Symmetric one-way delays between every pair of regions.
#[derive(Debug, Clone)]
pub struct DelayTable {
    regions: Vec<Region>,
    by_code: HashMap<String, usize>,
    /// `n * n` one-way delays, indexed `a * n + b`.
    one_way: Vec<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseTableError {
    #[error("line {line}: expected {expected} comma-separated fields")]
    Fields { line: usize, expected: usize },
    #[error("line {line}: invalid number {value:?}")]
    Number { line: usize, value: String },
    #[error("line {line}: unknown region {code:?}")]
    UnknownRegion { line: usize, code: String },
    #[error("duplicate region {code:?}")]
    DuplicateRegion { code: String },
    #[error("no round-trip time between {a} and {b}")]
    MissingPair { a: String, b: String },
}

// === impl DelayTable ===

impl DelayTable {
    /// The table built from the measured data embedded in this crate (18 regions).
    pub fn embedded() -> &'static DelayTable {
        static TABLE: OnceLock<DelayTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            DelayTable::parse(REGIONS_CSV, RTT_CSV).expect("embedded latency data is valid")
        })
    }

    /// Parses `regions.csv` (`region,city,latitude,longitude`) and `rtt.csv`
    /// (`a,b,rtt_ms,...`). Every pair of distinct regions must have a round-trip time.
    pub fn parse(regions_csv: &str, rtt_csv: &str) -> Result<Self, ParseTableError> {
        let mut regions = Vec::new();
        let mut by_code = HashMap::new();
        for (line, fields) in csv_rows(regions_csv) {
            let [code, city, lat, lon] = fields[..] else {
                return Err(ParseTableError::Fields { line, expected: 4 });
            };
            let code = code.to_ascii_lowercase();
            if by_code.insert(code.clone(), regions.len()).is_some() {
                return Err(ParseTableError::DuplicateRegion { code });
            }
            regions.push(Region {
                code,
                city: city.to_owned(),
                latitude: number(line, lat)?,
                longitude: number(line, lon)?,
            });
        }
        let n = regions.len();
        let mut one_way = vec![None; n * n];
        for i in 0..n {
            one_way[i * n + i] = Some(SAME_CITY_ONE_WAY);
        }
        for (line, fields) in csv_rows(rtt_csv) {
            let [a, b, rtt, ..] = fields[..] else {
                return Err(ParseTableError::Fields { line, expected: 3 });
            };
            let index = |code: &str| {
                by_code
                    .get(&code.to_ascii_lowercase())
                    .copied()
                    .ok_or_else(|| ParseTableError::UnknownRegion {
                        line,
                        code: code.to_owned(),
                    })
            };
            let (a, b) = (index(a)?, index(b)?);
            let rtt_ms = number(line, rtt)?;
            let delay = Duration::from_secs_f64(rtt_ms / 2.0 / 1000.0);
            one_way[a * n + b] = Some(delay);
            one_way[b * n + a] = Some(delay);
        }
        let one_way = one_way
            .into_iter()
            .enumerate()
            .map(|(i, delay)| {
                delay.ok_or_else(|| ParseTableError::MissingPair {
                    a: regions[i / n].code.clone(),
                    b: regions[i % n].code.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            regions,
            by_code,
            one_way,
        })
    }

    /// All regions, in file order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The region with this code (case-insensitive).
    pub fn region(&self, code: &str) -> Option<&Region> {
        self.index(code).map(|i| &self.regions[i])
    }

    /// A region by code or by city: `ams`, `AMS`, `Amsterdam`, `sydney`, `new york`.
    pub fn resolve(&self, code_or_city: &str) -> Option<&Region> {
        if let Some(region) = self.region(code_or_city) {
            return Some(region);
        }
        let wanted = code_or_city.trim().to_lowercase();
        if wanted.is_empty() {
            return None;
        }
        self.regions
            .iter()
            .find(|r| r.city.to_lowercase().starts_with(&wanted))
    }

    /// One-way delay between two regions (`rtt / 2`; [`SAME_CITY_ONE_WAY`] within a region).
    /// `None` if either code is unknown.
    pub fn one_way(&self, a: &str, b: &str) -> Option<Duration> {
        Some(self.one_way_idx(self.index(a)?, self.index(b)?))
    }

    /// Round-trip time between two regions; `None` if either code is unknown.
    pub fn rtt(&self, a: &str, b: &str) -> Option<Duration> {
        self.one_way(a, b).map(|d| d * 2)
    }

    /// The candidate region nearest to `from` (ties go to the earlier candidate). Unknown
    /// candidates are skipped; `None` if `from` is unknown or no candidate is known.
    pub fn nearest<'c>(&self, from: &str, candidates: &[&'c str]) -> Option<&'c str> {
        self.ranked(from, candidates).into_iter().next()
    }

    /// The known candidates ordered by distance from `from`, nearest first (stable).
    pub fn ranked<'c>(&self, from: &str, candidates: &[&'c str]) -> Vec<&'c str> {
        let Some(from) = self.index(from) else {
            return Vec::new();
        };
        let mut known: Vec<(Duration, &'c str)> = candidates
            .iter()
            .filter_map(|c| Some((self.one_way_idx(from, self.index(c)?), *c)))
            .collect();
        known.sort_by_key(|(delay, _)| *delay);
        known.into_iter().map(|(_, c)| c).collect()
    }

    pub(crate) fn index(&self, code: &str) -> Option<usize> {
        self.by_code.get(&code.to_ascii_lowercase()).copied()
    }

    pub(crate) fn one_way_idx(&self, a: usize, b: usize) -> Duration {
        self.one_way[a * self.regions.len() + b]
    }
}

/// Non-empty data rows after the header, with 1-based line numbers.
fn csv_rows(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.split(',').map(str::trim).collect()))
}

fn number(line: usize, value: &str) -> Result<f64, ParseTableError> {
    value.parse().map_err(|_| ParseTableError::Number {
        line,
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_has_all_pairs() {
        let table = DelayTable::embedded();
        assert_eq!(table.regions().len(), 18);
        assert_eq!(
            table.one_way("ams", "fra"),
            Some(Duration::from_micros(6925))
        );
        assert_eq!(table.one_way("fra", "ams"), table.one_way("ams", "fra"));
        assert_eq!(table.rtt("AMS", "fra"), Some(Duration::from_micros(13850)));
        assert_eq!(table.one_way("syd", "syd"), Some(SAME_CITY_ONE_WAY));
        assert_eq!(table.one_way("ams", "xxx"), None);
        for a in table.regions() {
            for b in table.regions() {
                assert!(
                    table.one_way(&a.code, &b.code).is_some(),
                    "{} {}",
                    a.code,
                    b.code
                );
            }
        }
    }

    #[test]
    fn nearest_and_ranked() {
        let table = DelayTable::embedded();
        assert_eq!(table.nearest("ams", &["syd", "iad", "fra"]), Some("fra"));
        assert_eq!(
            table.nearest("nrt", &["ams", "iad", "syd", "sin"]),
            Some("sin")
        );
        assert_eq!(
            table.ranked("ams", &["syd", "bogus", "fra", "iad"]),
            ["fra", "iad", "syd"]
        );
        assert_eq!(table.nearest("bogus", &["fra"]), None);
        assert_eq!(table.nearest("ams", &[]), None);
    }

    #[test]
    fn resolve_by_code_or_city() {
        let table = DelayTable::embedded();
        assert_eq!(table.resolve("SYD").map(|r| r.code.as_str()), Some("syd"));
        assert_eq!(
            table.resolve("Sydney").map(|r| r.code.as_str()),
            Some("syd")
        );
        assert_eq!(
            table.resolve("new york").map(|r| r.code.as_str()),
            Some("ewr")
        );
        assert_eq!(table.resolve(""), None);
        assert_eq!(table.resolve("atlantis"), None);
    }

    #[test]
    fn parse_reports_missing_pairs_and_bad_numbers() {
        let regions = "region,city,latitude,longitude\naaa,A,1,2\nbbb,B,3,4\nccc,C,5,6\n";
        let err = DelayTable::parse(regions, "a,b,rtt_ms\naaa,bbb,10\n").unwrap_err();
        assert!(matches!(err, ParseTableError::MissingPair { .. }), "{err}");
        let err = DelayTable::parse(regions, "a,b,rtt_ms\naaa,bbb,ten\n").unwrap_err();
        assert_eq!(err.to_string(), "line 2: invalid number \"ten\"");
        let err = DelayTable::parse(regions, "a,b,rtt_ms\naaa,zzz,1\n").unwrap_err();
        assert!(
            matches!(err, ParseTableError::UnknownRegion { line: 2, .. }),
            "{err}"
        );
        let table =
            DelayTable::parse(regions, "a,b,rtt_ms\naaa,bbb,10\naaa,ccc,20\nbbb,ccc,30\n").unwrap();
        assert_eq!(table.one_way("ccc", "bbb"), Some(Duration::from_millis(15)));
    }
}
