//! `godwit.toml` / `fly.toml`: parsing into [`AppConfig`] (pure; only [`AppConfig::load`] reads
//! a file), warnings for keys Godwit does not support, errors that name the line and the key, and
//! the machine configs a deploy creates.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use godwit_types::machine::MachinePort;
use godwit_types::{Concurrency, MachineCheck, RestartConfig, ServiceCheck};
use serde_path_to_error::Segment;
use toml::de::{DeTable, DeValue};

mod machines;
mod raw;
mod resolve;
mod schema;
#[cfg(test)]
mod tests;

/// How `deploy` replaces existing machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// One machine at a time; each must be started with passing checks before the next.
    #[default]
    Rolling,
    /// All at once, without waiting for checks.
    Immediate,
}

/// A parsed and validated app configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppConfig {
    pub app: Option<String>,
    pub primary_region: Option<String>,
    /// `[build] image`, with relative paths resolved against the config file's directory.
    pub image: Option<String>,
    pub kill_signal: Option<String>,
    pub kill_timeout: Option<std::time::Duration>,
    pub strategy: Strategy,
    /// How long `deploy` waits for one machine to be started and healthy.
    pub wait_timeout: std::time::Duration,
    pub env: BTreeMap<String, String>,
    /// Process group → command (split like a shell would). Empty: one group, `app`.
    pub processes: BTreeMap<String, Vec<String>>,
    pub services: Vec<ScopedService>,
    pub checks: BTreeMap<String, Scoped<MachineCheck>>,
    pub vms: Vec<Scoped<godwit_types::GuestConfig>>,
    pub restarts: Vec<Scoped<RestartConfig>>,
    pub init: godwit_types::InitConfig,
    /// One line per key that was ignored or value that was replaced by a default.
    pub warnings: Vec<String>,
}

/// A section that `processes = [...]` can restrict to some process groups (empty: all).
#[derive(Debug, Clone, PartialEq)]
pub struct Scoped<T> {
    pub value: T,
    pub processes: Vec<String>,
}

/// A service (from `[http_service]` or `[[services]]`).
pub type ScopedService = Scoped<godwit_types::MachineService>;

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} line {line}{}: {message}", key.as_ref().map(|k| format!(", key `{k}`")).unwrap_or_default())]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        key: Option<String>,
        message: String,
    },
}

pub use raw::parse_memory;
pub use resolve::{resolve_image, split_command};

/// The process group of machines when the config has no `[processes]`.
pub const DEFAULT_GROUP: &str = "app";

/// The config file names `deploy` and friends look for, in order.
pub const FILE_NAMES: [&str; 2] = ["godwit.toml", "fly.toml"];

// === impl AppConfig ===

impl AppConfig {
    /// Reads and parses `path`; relative image paths resolve against its directory.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let source = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let dir = absolute.parent().unwrap_or(Path::new("/"));
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        Self::parse(&source, &name, dir)
    }

    /// Parses a config file's text. `file` names it in errors; `dir` is where relative image
    /// paths start from.
    pub fn parse(source: &str, file: &str, dir: &Path) -> Result<Self, LoadError> {
        let doc = DeTable::parse(source).map_err(|e| syntax_error(file, source, &e))?;
        let warnings = schema::unsupported_keys(doc.get_ref(), source);
        let deserializer =
            toml::Deserializer::parse(source).map_err(|e| syntax_error(file, source, &e))?;
        let raw: raw::RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = path_string(e.path());
            let inner = e.inner();
            let (line, column) = inner.span().map_or((1, 1), |s| line_col(source, s.start));
            LoadError::Invalid {
                file: file.to_owned(),
                line,
                column,
                key: (!key.is_empty()).then_some(key),
                message: humanize(inner.message()),
            }
        })?;
        let ctx = Ctx {
            file,
            source,
            doc: doc.get_ref(),
            dir,
        };
        let mut config = machines::from_raw(raw, &ctx)?;
        let mut all = warnings;
        all.append(&mut config.warnings);
        config.warnings = all;
        Ok(config)
    }

    /// The process groups machines are made for, sorted.
    pub fn process_groups(&self) -> Vec<String> {
        if self.processes.is_empty() {
            vec![DEFAULT_GROUP.to_owned()]
        } else {
            self.processes.keys().cloned().collect()
        }
    }
}

/// What validation needs to point at a place in the file.
#[derive(Debug)]
struct Ctx<'a> {
    file: &'a str,
    source: &'a str,
    doc: &'a DeTable<'a>,
    dir: &'a Path,
}

/// One step of a path into the document.
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

impl Ctx<'_> {
    /// An error about the value at `path`.
    fn error(&self, path: &[Seg<'_>], message: impl Into<String>) -> LoadError {
        let span = locate(self.doc, path).unwrap_or(0..0);
        let (line, column) = line_col(self.source, span.start);
        LoadError::Invalid {
            file: self.file.to_owned(),
            line,
            column,
            key: Some(render_path(path)),
            message: message.into(),
        }
    }

    /// The line of the value at `path`, for warnings.
    fn line_of(&self, path: &[Seg<'_>]) -> usize {
        locate(self.doc, path).map_or(0, |s| line_col(self.source, s.start).0)
    }
}

fn locate(doc: &DeTable<'_>, path: &[Seg<'_>]) -> Option<Range<usize>> {
    let (first, rest) = path.split_first()?;
    let Seg::Key(key) = first else { return None };
    let mut current = doc.get(*key)?;
    for seg in rest {
        current = match (seg, current.get_ref()) {
            (Seg::Key(k), DeValue::Table(t)) => t.get(*k)?,
            (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(current.span())
}

fn render_path(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn path_string(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

fn syntax_error(file: &str, source: &str, e: &toml::de::Error) -> LoadError {
    let (line, column) = e.span().map_or((1, 1), |s| line_col(source, s.start));
    // The key written on that line, if it has the `key = value` shape.
    let key = source
        .lines()
        .nth(line.saturating_sub(1))
        .and_then(|text| text.split_once('='))
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('[') && !k.starts_with('#'));
    LoadError::Invalid {
        file: file.to_owned(),
        line,
        column,
        key,
        message: e.message().trim().to_owned(),
    }
}

/// 1-based line and column of a byte offset.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source.as_bytes()[..offset.min(source.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    (line, offset.saturating_sub(line_start) + 1)
}

/// Turns serde's "invalid type: string "x", expected u16" into "expected an integer, found
/// string "x"".
fn humanize(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.rsplit_once(", expected ")
    {
        return format!("expected {}, found {found}", expected_text(expected, false));
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((found, expected)) = rest.rsplit_once(", expected ")
    {
        return format!(
            "{found} is not allowed: expected {}",
            expected_text(expected, true)
        );
    }
    message.to_owned()
}

fn expected_text(expected: &str, with_range: bool) -> String {
    let range = match expected {
        "u8" => "0 to 255",
        "u16" => "0 to 65535",
        "u32" => "0 to 4294967295",
        "u64" | "usize" => "0 or more",
        "i32" | "i64" => "",
        "a sequence" => return "an array".into(),
        "a map" => return "a table".into(),
        other if other.starts_with("struct ") => return "a table".into(),
        other => return other.to_owned(),
    };
    if with_range && !range.is_empty() {
        format!("an integer from {range}")
    } else {
        "an integer".into()
    }
}

/// Builds the check a `[http_service]` / `[[services]]` check list entry describes.
fn service_check(kind: &str, port: u16, raw: &raw::RawServiceCheck) -> ServiceCheck {
    let http = kind == "http";
    ServiceCheck {
        kind: kind.to_owned(),
        port: Some(port),
        interval: raw.interval,
        timeout: raw.timeout,
        grace_period: raw.grace_period,
        method: raw
            .method
            .clone()
            .or_else(|| http.then(|| "GET".to_owned())),
        path: raw.path.clone().or_else(|| http.then(|| "/".to_owned())),
    }
}

fn concurrency(raw: Option<&raw::RawConcurrency>) -> Option<Concurrency> {
    raw.map(|c| Concurrency {
        kind: c.kind.clone().unwrap_or_else(|| "connections".into()),
        soft_limit: c.soft_limit.unwrap_or(20),
        hard_limit: c.hard_limit,
    })
}

fn http_ports(force_https: bool, options: Option<&raw::RawHttpOptions>) -> Vec<MachinePort> {
    let http_options = options.map(machines::http_options);
    vec![
        MachinePort {
            port: Some(80),
            handlers: vec!["http".into()],
            force_https: force_https.then_some(true),
            proxy_proto_options: None,
            http_options: http_options.clone(),
        },
        MachinePort {
            port: Some(443),
            handlers: vec!["tls".into(), "http".into()],
            force_https: None,
            proxy_proto_options: None,
            http_options,
        },
    ]
}
