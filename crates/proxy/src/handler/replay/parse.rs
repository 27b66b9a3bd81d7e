//! The two forms of a replay: the `fly-replay` header (`key=value;...`) and the JSON body of
//! a `application/vnd.fly.replay+json` response. Both give the same fields, checked once
//! into a [`Replay`]; the JSON form adds `transform`. Replay caching (`cache`) is not
//! supported and is refused by name.

use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::handler::route::{By, Pick, Route, parse_regions};

/// The fields a replay may name (both forms; `transform` only in JSON).
const FIELDS: &str = "app, instance, prefer_instance, region, elsewhere, state, timeout, fallback";

/// A checked replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replay {
    /// Another app to replay to (`app=`); `None` stays in the same app.
    pub(crate) app: Option<String>,
    /// Which machines of the target app may take it, which first, and how long to wait.
    pub(crate) route: Route,
    pub(crate) state: Option<String>,
    /// Where the request goes when the replay cannot be served.
    pub(crate) fallback: Option<Fallback>,
    /// Changes to the replayed request (JSON form only).
    pub(crate) transform: Transform,
    /// The instance and regions as asked, for `fly-replay-failed`.
    pub(crate) asked_instance: Option<String>,
    pub(crate) asked_regions: Option<String>,
}

/// `fallback=`: back to the machine that asked for the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// That machine only.
    ForceSelf,
    /// That machine first, else any machine of its app.
    PreferSelf,
}

/// `transform` of the JSON form: a new path, headers removed, headers set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Transform {
    pub(crate) path: Option<PathAndQuery>,
    pub(crate) delete_headers: Vec<HeaderName>,
    pub(crate) set_headers: Vec<(HeaderName, HeaderValue)>,
}

/// The fields of either form as given, before they are checked.
#[derive(Debug, Default)]
struct Fields {
    app: Option<String>,
    instance: Option<String>,
    prefer_instance: Option<String>,
    region: Option<String>,
    elsewhere: bool,
    state: Option<String>,
    timeout: Option<String>,
    fallback: Option<String>,
    transform: Transform,
}

/// Parses the header form: `key=value` pairs separated by `;` (values may be quoted).
/// `from_machine` is the machine that answered with it.
pub(crate) fn parse(text: &str, from_machine: &str) -> Result<Replay, String> {
    let mut fields = Fields::default();
    for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("replay field {pair:?} is not key=value"))?;
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim().trim_matches('"').to_owned();
        match key.as_str() {
            "elsewhere" => fields.elsewhere = parse_bool("elsewhere", &value)?,
            "transform" | "cache" => {
                return Err(format!(
                    "replay field {key:?} is not supported in the header: {}",
                    if key == "cache" {
                        "replay caching is not supported"
                    } else {
                        "send the JSON form (application/vnd.fly.replay+json)"
                    }
                ));
            }
            _ => fields.set_text(&key, value)?,
        }
    }
    fields.check(from_machine)
}

/// Parses the JSON form (the body of a `application/vnd.fly.replay+json` response).
pub(crate) fn parse_json(body: &[u8], from_machine: &str) -> Result<Replay, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the replay JSON is not valid: {e}"))?;
    let Value::Object(object) = value else {
        return Err("the replay JSON must be an object".to_owned());
    };
    let mut fields = Fields::default();
    for (key, value) in object {
        match (key.as_str(), value) {
            (_, Value::Null) => {}
            ("elsewhere", Value::Bool(b)) => fields.elsewhere = b,
            ("elsewhere", other) => {
                return Err(format!(
                    "replay field elsewhere is {other}: use true or false"
                ));
            }
            ("region", Value::Array(items)) => {
                let names: Result<Vec<String>, String> =
                    items.into_iter().map(|v| json_text("region", v)).collect();
                fields.region = Some(names?.join(","));
            }
            ("transform", value) => fields.transform = parse_transform(value)?,
            ("cache", _) => {
                return Err(
                    "replay field \"cache\" is not supported: replay caching is not supported"
                        .to_owned(),
                );
            }
            (key, value) => {
                let text = json_text(key, value)?;
                fields.set_text(key, text)?;
            }
        }
    }
    fields.check(from_machine)
}

/// A duration such as `500ms`, `10s`, `1.5s` or `2m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "replay field timeout: {text:?} is not a duration: use a number and ms, s or m \
             (e.g. 500ms, 10s)"
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(bad()),
    };
    match Duration::try_from_secs_f64(number * scale) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(format!(
            "replay field timeout: {text:?} must be more than zero"
        )),
    }
}

// === impl Fields ===

impl Fields {
    /// Sets a text field; an unknown key is refused with the list of known ones.
    fn set_text(&mut self, key: &str, value: String) -> Result<(), String> {
        let slot = match key {
            "app" => &mut self.app,
            "instance" => &mut self.instance,
            "prefer_instance" => &mut self.prefer_instance,
            "region" => &mut self.region,
            "state" => &mut self.state,
            "timeout" => &mut self.timeout,
            "fallback" => &mut self.fallback,
            other => {
                return Err(format!(
                    "replay field {other:?} is not supported: use {FIELDS}"
                ));
            }
        };
        if value.is_empty() && key != "state" {
            return Err(format!("replay field {key} is empty"));
        }
        *slot = Some(value);
        Ok(())
    }

    /// Checks the fields into a replay; `from_machine` is excluded by `elsewhere`.
    fn check(self, from_machine: &str) -> Result<Replay, String> {
        let regions = self
            .region
            .as_deref()
            .map(|r| parse_regions(r, "replay field region"))
            .transpose()?;
        let timeout = self.timeout.as_deref().map(parse_duration).transpose()?;
        let fallback = match self.fallback.as_deref() {
            None => None,
            Some("force_self") => Some(Fallback::ForceSelf),
            Some("prefer_self") => Some(Fallback::PreferSelf),
            Some(other) => {
                return Err(format!(
                    "replay field fallback: {other:?} is not one of force_self, prefer_self"
                ));
            }
        };
        let except = self.elsewhere.then(|| from_machine.to_owned());
        let pick = match (&self.instance, &regions) {
            (Some(id), _) => Pick::Instance(id.clone()),
            (None, Some(regions)) if !regions.any => Pick::Regions {
                regions: regions.tiers.concat(),
                except,
            },
            _ if self.elsewhere => Pick::Other(from_machine.to_owned()),
            _ if self.app.is_some() || self.prefer_instance.is_some() || regions.is_some() => {
                Pick::Any
            }
            _ => {
                return Err(
                    "replay names no app, instance, prefer_instance, region or elsewhere"
                        .to_owned(),
                );
            }
        };
        let mut prefer = Vec::new();
        if self.instance.is_none() {
            if let Some(id) = &self.prefer_instance {
                prefer.push(Pick::Instance(id.clone()));
            }
            if let Some(regions) = regions.as_ref().filter(|r| r.tiers.len() > 1 || r.any) {
                prefer.extend(regions.tiers.iter().map(|tier| Pick::Regions {
                    regions: tier.clone(),
                    except: None,
                }));
            }
        }
        Ok(Replay {
            app: self.app.map(|a| a.to_ascii_lowercase()),
            route: Route {
                pick,
                prefer,
                timeout,
                by: By::Replay,
            },
            state: self.state,
            fallback,
            transform: self.transform,
            asked_instance: self.instance.or(self.prefer_instance),
            asked_regions: self.region,
        })
    }
}

fn parse_bool(field: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "replay field {field}: {value:?} is not true or false"
        )),
    }
}

/// A JSON string (numbers are taken as their text, e.g. a numeric state).
fn json_text(field: &str, value: Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("replay field {field} is {other}: send a string")),
    }
}

/// `transform`: `{"path": "/new", "delete_headers": ["x"], "set_headers": [{"name": "..",
/// "value": ".."}]}`.
fn parse_transform(value: Value) -> Result<Transform, String> {
    let Value::Object(object) = value else {
        return Err("replay field transform must be an object".to_owned());
    };
    let mut transform = Transform::default();
    for (key, value) in object {
        match (key.as_str(), value) {
            (_, Value::Null) => {}
            ("path", Value::String(path)) => {
                if !path.starts_with('/') {
                    return Err(format!(
                        "replay field transform.path {path:?} must start with /"
                    ));
                }
                let parsed = path
                    .parse::<PathAndQuery>()
                    .map_err(|_| format!("replay field transform.path {path:?} is not a path"))?;
                transform.path = Some(parsed);
            }
            ("delete_headers", Value::Array(names)) => {
                for name in names {
                    let name = json_text("transform.delete_headers", name)?;
                    transform.delete_headers.push(header_name(&name)?);
                }
            }
            ("set_headers", Value::Array(pairs)) => {
                for pair in pairs {
                    transform.set_headers.push(set_header(pair)?);
                }
            }
            ("path" | "delete_headers" | "set_headers", other) => {
                return Err(format!(
                    "replay field transform.{key} is {other}: path takes a string, \
                     delete_headers a list of names, set_headers a list of {{name, value}}"
                ));
            }
            (other, _) => {
                return Err(format!(
                    "replay field \"transform.{other}\" is not supported: use path, \
                     delete_headers, set_headers"
                ));
            }
        }
    }
    Ok(transform)
}

/// One `{"name": "..", "value": ".."}` of `transform.set_headers`.
fn set_header(pair: Value) -> Result<(HeaderName, HeaderValue), String> {
    let what = "replay field transform.set_headers";
    let Value::Object(mut object) = pair else {
        return Err(format!("{what} takes objects with a name and a value"));
    };
    if let Some(other) = object.keys().find(|k| *k != "name" && *k != "value") {
        return Err(format!(
            "{what}: field {other:?} is not supported: use name, value"
        ));
    }
    let name = json_text(what, object.remove("name").unwrap_or(Value::Null))?;
    let value = json_text(what, object.remove("value").unwrap_or(Value::Null))?;
    let value = HeaderValue::from_str(&value)
        .map_err(|_| format!("{what}: the value of {name:?} is not a valid header value"))?;
    Ok((header_name(&name)?, value))
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("replay field transform: {name:?} is not a header name"))
}

#[cfg(test)]
mod tests;
