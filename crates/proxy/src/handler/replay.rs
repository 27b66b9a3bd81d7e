//! The `fly-replay` / `godwit-replay` response header: where to send the request again
//! (another machine, region or app), and the replay itself.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, Version, request};

use super::access::ServedBy;
use super::{Conn, Proxy, headers, served};
use crate::backhaul;
use crate::body::{ProxyBody, RequestBody, error_response};
use crate::routes::Target;

/// Response headers that ask for a replay.
pub(crate) const REPLAY_HEADERS: [&str; 2] = ["fly-replay", "godwit-replay"];

/// Which machines a request may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Any machine of the app.
    Any,
    /// Any machine of the app but this one (`elsewhere=true` alone).
    Other(String),
    /// Exactly this machine.
    Instance(String),
    /// Machines in these regions, maybe without the one that asked for the replay.
    Regions {
        regions: Vec<String>,
        except: Option<String>,
    },
}

/// A parsed replay header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replay {
    /// Another app to replay to (`app=`); `None` stays in the same app.
    pub(crate) app: Option<String>,
    pub(crate) pick: Pick,
    pub(crate) state: Option<String>,
}

/// The replay header of a response, if any (its raw text).
pub(crate) fn header_of(headers: &HeaderMap) -> Option<&HeaderValue> {
    REPLAY_HEADERS.iter().find_map(|name| headers.get(*name))
}

/// Parses `app=<name>`, `instance=<id>`, `region=<r>[,<r>...]`, `elsewhere=true` and
/// `state=<s>`, separated by `;`. At least one of app, instance, region or elsewhere must be
/// given. Other keys (`prefer_instance`, `fallback`...) are refused.
pub(crate) fn parse(text: &str, from_machine: &str) -> Result<Replay, String> {
    let mut app = None;
    let mut instance = None;
    let mut regions = None;
    let mut elsewhere = false;
    let mut state = None;
    for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("replay field {pair:?} is not key=value"))?;
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "app" if !value.is_empty() => app = Some(value.to_ascii_lowercase()),
            "instance" => instance = Some(value.to_owned()),
            "region" => {
                regions = Some(
                    value
                        .split(',')
                        .map(|r| r.trim().to_owned())
                        .filter(|r| !r.is_empty())
                        .collect::<Vec<_>>(),
                );
            }
            "elsewhere" => elsewhere = value.eq_ignore_ascii_case("true"),
            "state" => state = Some(value.to_owned()),
            other => return Err(format!("replay field {other:?} is not supported")),
        }
    }
    let pick = match (instance, regions) {
        (Some(id), _) if !id.is_empty() => Pick::Instance(id),
        (_, Some(regions)) if !regions.is_empty() => Pick::Regions {
            regions,
            except: elsewhere.then(|| from_machine.to_owned()),
        },
        _ if elsewhere => Pick::Other(from_machine.to_owned()),
        _ if app.is_some() => Pick::Any,
        _ => return Err("replay names no app, instance, region or elsewhere".to_owned()),
    };
    Ok(Replay { app, pick, state })
}

// === impl Proxy ===

impl Proxy {
    /// A request the HTTP/1.1 fast path sent to `served_by`, which answered with a replay
    /// header (its text, or why it is not text), replayed as the hyper path replays:
    /// `request` is the client's (headers rewritten here) with its whole body. Returns the
    /// response with the client's headers and the machine that gave it.
    pub(crate) async fn replay_fast(
        &self,
        conn: &Conn,
        app: &str,
        request: http::Request<Bytes>,
        request_id: &HeaderValue,
        text: Result<String, String>,
        served_by: &Target,
    ) -> (Response<ProxyBody>, Option<Arc<Target>>) {
        let (mut parts, body) = request.into_parts();
        backhaul::strip(&mut parts.headers);
        headers::prepare_request(&mut parts, conn, &self.region, request_id);
        let mut body = RequestBody::Buffered(body);
        let mut response = self
            .replay_as_asked(
                app,
                conn.public_port,
                &mut parts,
                &mut body,
                text,
                served_by,
            )
            .await;
        headers::finish_response(response.headers_mut(), Version::HTTP_11, request_id, false);
        backhaul::strip(response.headers_mut());
        let machine = response.extensions_mut().remove::<ServedBy>().map(|s| s.0);
        (response, machine)
    }

    /// Replays the request as the replay header `text` of `served_by`'s response asks; the
    /// response is marked with the machine that gave it.
    pub(super) async fn replay_as_asked(
        &self,
        app: &str,
        port: u16,
        parts: &mut request::Parts,
        body: &mut RequestBody,
        text: Result<String, String>,
        served_by: &Target,
    ) -> Response<ProxyBody> {
        let replay = match text.and_then(|text| parse(&text, &served_by.machine_id)) {
            Ok(replay) => replay,
            Err(reason) => return error_response(StatusCode::BAD_GATEWAY, Some("PA03"), &reason),
        };
        match self.replay(app, port, parts, body, replay, served_by).await {
            Ok((response, target)) => served(response, &target),
            Err(response) => response,
        }
    }

    /// Sends the request again as `replay` asks (`served_by` answered with it). The target
    /// gets `fly-replay-src`; its own replay header is refused (`PA02`).
    pub(super) async fn replay(
        &self,
        app: &str,
        port: u16,
        parts: &mut request::Parts,
        body: &mut RequestBody,
        replay: Replay,
        served_by: &Target,
    ) -> Result<(Response<ProxyBody>, Arc<Target>), Response<ProxyBody>> {
        if !body.is_buffered() {
            let message = "the request body is over 1 MiB and cannot be replayed";
            return Err(error_response(
                StatusCode::BAD_GATEWAY,
                Some("PA01"),
                message,
            ));
        }
        let target_app = replay.app.as_deref().unwrap_or(app);
        if self.routes.app(target_app).is_none() {
            let message = format!("the replay names app {target_app:?}, which has no machines");
            return Err(error_response(
                StatusCode::BAD_GATEWAY,
                Some("PA04"),
                &message,
            ));
        }
        self.metrics.replay(app);
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let mut source = format!(
            "instance={};region={};t={micros}",
            served_by.machine_id, served_by.region
        );
        if replay.app.is_some() {
            source.push_str(&format!(";app={app}"));
        }
        if let Some(state) = &replay.state {
            source.push_str(&format!(";state={state}"));
        }
        if let Ok(value) = HeaderValue::from_str(&source) {
            parts.headers.insert("fly-replay-src", value);
        }
        tracing::debug!(from = %served_by.machine_id, to_app = %target_app, pick = ?replay.pick, "replaying");
        let (response, target) = self
            .forward(target_app, port, parts, body, &replay.pick)
            .await?;
        if header_of(response.headers()).is_some() {
            let message = "the replayed request asked for another replay";
            return Err(error_response(
                StatusCode::BAD_GATEWAY,
                Some("PA02"),
                message,
            ));
        }
        Ok((response, target))
    }
}

// === impl Pick ===

impl Pick {
    /// Whether `target` may serve a request with this pick.
    pub(crate) fn allows(&self, target: &Target) -> bool {
        match self {
            Pick::Any => true,
            Pick::Other(id) => target.machine_id != *id,
            Pick::Instance(id) => target.machine_id == *id,
            Pick::Regions { regions, except } => {
                regions.contains(&target.region) && except.as_ref() != Some(&target.machine_id)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_instance_and_regions() {
        let replay = parse("instance=m123;state=abc", "m1").expect("valid");
        assert_eq!(replay.pick, Pick::Instance("m123".into()));
        assert_eq!(replay.state.as_deref(), Some("abc"));
        assert_eq!(replay.app, None);
        let replay = parse("region=\"iad,ams\"; elsewhere=true", "m1").expect("valid");
        assert_eq!(
            replay.pick,
            Pick::Regions {
                regions: vec!["iad".into(), "ams".into()],
                except: Some("m1".into())
            }
        );
        assert!(parse("prefer_instance=m2", "m1").is_err());
        assert!(parse("state=x", "m1").is_err());
        assert!(parse("garbage", "m1").is_err());
    }

    #[test]
    fn parses_apps_and_elsewhere() {
        let replay = parse("app=Other;state=s", "m1").expect("valid");
        assert_eq!(replay.app.as_deref(), Some("other"));
        assert_eq!(replay.pick, Pick::Any);
        let replay = parse("app=other;region=iad", "m1").expect("valid");
        assert_eq!(replay.app.as_deref(), Some("other"));
        assert!(matches!(replay.pick, Pick::Regions { except: None, .. }));
        let replay = parse("elsewhere=true", "m1").expect("valid");
        assert_eq!(replay.pick, Pick::Other("m1".into()));
        assert_eq!(replay.app, None);
        assert!(parse("elsewhere=false", "m1").is_err());
    }
}
