//! The `fly-replay` / `godwit-replay` response header: where to send the request again.

use http::HeaderMap;

use crate::routes::Target;

/// Response headers that ask for a replay.
pub(crate) const REPLAY_HEADERS: [&str; 2] = ["fly-replay", "godwit-replay"];

/// Which machines a request may go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Any machine of the app.
    Any,
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
    pub(crate) pick: Pick,
    pub(crate) state: Option<String>,
}

/// The replay header of a response, if any (its raw text).
pub(crate) fn header_of(headers: &HeaderMap) -> Option<&http::HeaderValue> {
    REPLAY_HEADERS.iter().find_map(|name| headers.get(*name))
}

/// Parses `instance=<id>` or `region=<r>[,<r>...]` plus `elsewhere=true` and `state=<s>`,
/// separated by `;`. Other keys (`app`, `prefer_instance`, `fallback`...) are refused.
pub(crate) fn parse(text: &str, from_machine: &str) -> Result<Replay, String> {
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
        _ => return Err("replay names neither an instance nor a region".to_owned()),
    };
    Ok(Replay { pick, state })
}

// === impl Pick ===

impl Pick {
    /// Whether `target` may serve a request with this pick.
    pub(crate) fn allows(&self, target: &Target) -> bool {
        match self {
            Pick::Any => true,
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
        let replay = parse("region=\"iad,ams\"; elsewhere=true", "m1").expect("valid");
        assert_eq!(
            replay.pick,
            Pick::Regions {
                regions: vec!["iad".into(), "ams".into()],
                except: Some("m1".into())
            }
        );
        assert!(parse("app=other", "m1").is_err());
        assert!(parse("state=x", "m1").is_err());
        assert!(parse("garbage", "m1").is_err());
    }
}
