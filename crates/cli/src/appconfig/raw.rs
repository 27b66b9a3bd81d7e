//! The serde shape of `godwit.toml` / `fly.toml`. Unknown keys are not errors here: the schema
//! walk in `schema.rs` turns them into warnings.

use std::collections::BTreeMap;
use std::fmt;

use godwit_types::duration::Duration;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawConfig {
    pub(super) app: Option<String>,
    pub(super) primary_region: Option<String>,
    pub(super) kill_signal: Option<String>,
    pub(super) kill_timeout: Option<KillTimeout>,
    pub(super) build: Option<RawBuild>,
    pub(super) deploy: Option<RawDeploy>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, EnvValue>,
    #[serde(default)]
    pub(super) processes: BTreeMap<String, String>,
    pub(super) http_service: Option<RawHttpService>,
    #[serde(default)]
    pub(super) services: Vec<RawService>,
    #[serde(default)]
    pub(super) checks: BTreeMap<String, RawTopCheck>,
    #[serde(default)]
    pub(super) vm: Vec<RawVm>,
    #[serde(default)]
    pub(super) restart: Vec<RawRestart>,
    pub(super) experimental: Option<RawExperimental>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawBuild {
    pub(super) image: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawDeploy {
    pub(super) strategy: Option<String>,
    pub(super) wait_timeout: Option<KillTimeout>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawHttpService {
    #[serde(default = "default_internal_port")]
    pub(super) internal_port: u16,
    #[serde(default)]
    pub(super) force_https: bool,
    pub(super) auto_stop_machines: Option<AutoStop>,
    pub(super) auto_start_machines: Option<bool>,
    pub(super) min_machines_running: Option<u32>,
    #[serde(default)]
    pub(super) processes: Vec<String>,
    pub(super) concurrency: Option<RawConcurrency>,
    #[serde(default)]
    pub(super) checks: Vec<RawServiceCheck>,
    pub(super) http_options: Option<RawHttpOptions>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawService {
    #[serde(default = "default_protocol")]
    pub(super) protocol: String,
    #[serde(default = "default_internal_port")]
    pub(super) internal_port: u16,
    pub(super) auto_stop_machines: Option<AutoStop>,
    pub(super) auto_start_machines: Option<bool>,
    pub(super) min_machines_running: Option<u32>,
    #[serde(default)]
    pub(super) ports: Vec<RawPort>,
    pub(super) concurrency: Option<RawConcurrency>,
    #[serde(default)]
    pub(super) tcp_checks: Vec<RawServiceCheck>,
    #[serde(default)]
    pub(super) http_checks: Vec<RawServiceCheck>,
    #[serde(default)]
    pub(super) processes: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawPort {
    pub(super) port: Option<u16>,
    #[serde(default)]
    pub(super) handlers: Vec<String>,
    pub(super) force_https: Option<bool>,
    pub(super) proxy_proto_options: Option<RawProxyProtoOptions>,
    pub(super) http_options: Option<RawHttpOptions>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawProxyProtoOptions {
    pub(super) version: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct RawHttpOptions {
    pub(super) h2_backend: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawConcurrency {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) soft_limit: Option<u32>,
    pub(super) hard_limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawServiceCheck {
    pub(super) interval: Option<Duration>,
    pub(super) timeout: Option<Duration>,
    pub(super) grace_period: Option<Duration>,
    pub(super) method: Option<String>,
    pub(super) path: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawTopCheck {
    pub(super) port: u16,
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) interval: Option<Duration>,
    pub(super) timeout: Option<Duration>,
    pub(super) grace_period: Option<Duration>,
    pub(super) method: Option<String>,
    pub(super) path: Option<String>,
    #[serde(default)]
    pub(super) processes: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawVm {
    pub(super) size: Option<String>,
    pub(super) memory: Option<Memory>,
    pub(super) memory_mb: Option<u64>,
    pub(super) cpus: Option<u32>,
    pub(super) cpu_kind: Option<String>,
    #[serde(default)]
    pub(super) processes: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRestart {
    pub(super) policy: Option<String>,
    pub(super) retries: Option<u32>,
    #[serde(default)]
    pub(super) processes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawExperimental {
    #[serde(default)]
    pub(super) cmd: Vec<String>,
    #[serde(default)]
    pub(super) entrypoint: Vec<String>,
    #[serde(default)]
    pub(super) exec: Vec<String>,
}

/// An `[env]` value: strings, and numbers or booleans written without quotes.
#[derive(Debug)]
pub(super) struct EnvValue(pub(super) String);

/// `kill_timeout` / `wait_timeout`: a duration string, or a bare number of seconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct KillTimeout(pub(super) std::time::Duration);

/// `memory` in `[[vm]]`: `"512mb"`, `"1gb"` or a bare number of megabytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Memory(pub(super) u64);

/// `auto_stop_machines`: `"off"`, `"stop"`, `"suspend"`, or a boolean.
#[derive(Debug, Clone)]
pub(super) struct AutoStop(pub(super) String);

fn default_internal_port() -> u16 {
    8080
}

fn default_protocol() -> String {
    "tcp".into()
}

/// Parses a memory size (`"512mb"`, `"1gb"`, `"768"`) to megabytes.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("{text:?} is not a memory size: write it like \"512mb\" or \"1gb\"")
    })?;
    let factor = match unit.trim() {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        other => {
            return Err(format!(
                "{text:?} is not a memory size: unknown unit {other:?} (use mb or gb)"
            ));
        }
    };
    Ok(n * factor)
}

// === impl EnvValue ===

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EnvValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

// === impl KillTimeout ===

impl<'de> Deserialize<'de> for KillTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KillTimeout;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like \"30s\" or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KillTimeout, E> {
                if let Ok(secs) = v.trim().parse::<u64>() {
                    return Ok(KillTimeout(std::time::Duration::from_secs(secs)));
                }
                humantime::parse_duration(v.trim())
                    .map(KillTimeout)
                    .map_err(|e| {
                        E::custom(format!(
                            "{v:?} is not a duration ({e}): write it like \"30s\" or \"1m\""
                        ))
                    })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KillTimeout, E> {
                u64::try_from(v)
                    .map(|secs| KillTimeout(std::time::Duration::from_secs(secs)))
                    .map_err(|_| E::custom(format!("{v} is negative: use a number of seconds")))
            }
        }
        d.deserialize_any(V)
    }
}

// === impl Memory ===

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Memory;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a memory size like \"512mb\" or a number of megabytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Memory, E> {
                parse_memory(v).map(Memory).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Memory, E> {
                u64::try_from(v)
                    .map(Memory)
                    .map_err(|_| E::custom(format!("{v} is negative: use a number of megabytes")))
            }
        }
        d.deserialize_any(V)
    }
}

// === impl AutoStop ===

impl<'de> Deserialize<'de> for AutoStop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AutoStop;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"off\", \"stop\", \"suspend\" or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AutoStop, E> {
                match v {
                    "off" | "stop" | "suspend" => Ok(AutoStop(v.to_owned())),
                    _ => Err(E::custom(format!(
                        "{v:?} is not supported: use \"off\", \"stop\" or \"suspend\""
                    ))),
                }
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AutoStop, E> {
                Ok(AutoStop(if v { "stop" } else { "off" }.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}
