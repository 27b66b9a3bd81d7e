//! Where one request may go: the machines it may reach at all ([`Pick`]) and those it tries
//! before the others (preference tiers), set by the client's routing headers
//! (`fly-prefer-region`, `fly-force-region`, `fly-prefer-instance-id`,
//! `fly-force-instance-id`) or by a replay. The headers go on to the machine unchanged, as
//! Fly passes them on; they steer only the first choice, not a replay the machine asks for.
//!
//! Preference is a ranking, not a second pass: a preferred machine ranks nearer than any
//! other, so everything the chooser does for the nearest region (start a stopped machine
//! there first, stay there at the soft limit, skip machines at their hard limit) holds for
//! the preferred ones, and the rest rank by closeness as usual once none of those can take
//! the request.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::backhaul::{Closeness, Rank};
use crate::balance::Ranks;
use crate::routes::Target;

/// The request header naming regions to try first (`iad,ord`; aliases allowed).
pub(crate) const FLY_PREFER_REGION: HeaderName = HeaderName::from_static("fly-prefer-region");
/// The request header naming the only regions a request may go to.
pub(crate) const FLY_FORCE_REGION: HeaderName = HeaderName::from_static("fly-force-region");
/// The request header naming a machine to try first.
pub(crate) const FLY_PREFER_INSTANCE: HeaderName =
    HeaderName::from_static("fly-prefer-instance-id");
/// The request header naming the only machine a request may go to.
pub(crate) const FLY_FORCE_INSTANCE: HeaderName = HeaderName::from_static("fly-force-instance-id");
/// Set on the request to the machine chosen when a preferred machine was not.
pub(crate) const FLY_PREFERRED_UNAVAILABLE: HeaderName =
    HeaderName::from_static("fly-preferred-instance-unavailable");

/// Fly's regions in the United States (`us`, `usa`); `na` adds Canada and Mexico.
const US: &[&str] = &[
    "atl", "bos", "den", "dfw", "ewr", "iad", "lax", "mia", "ord", "phx", "sea", "sjc",
];

/// Regions by continent, for the aliases of region lists (Fly's region codes; Johannesburg
/// is only in `any`).
const ALIASES: [(&str, &[&str]); 6] = [
    (
        "eu",
        &["ams", "arn", "cdg", "fra", "lhr", "mad", "otp", "waw"],
    ),
    (
        "na",
        &[
            "atl", "bos", "den", "dfw", "ewr", "gdl", "iad", "lax", "mia", "ord", "phx", "qro",
            "sea", "sjc", "yul", "yyz",
        ],
    ),
    ("us", US),
    ("usa", US),
    ("sa", &["bog", "eze", "gig", "gru", "scl"]),
    ("apac", &["bom", "hkg", "maa", "nrt", "sin", "syd"]),
];

/// Which machines a request may go to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Any machine of the app.
    #[default]
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

/// Where a request may go, what it tries first, and how long it may wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Route {
    /// The machines the request may go to at all.
    pub(crate) pick: Pick,
    /// Machines ranked nearer than every other, tier by tier in the order asked.
    pub(crate) prefer: Vec<Pick>,
    /// How long the request may wait for a machine; `None` is the queue timeout.
    pub(crate) timeout: Option<Duration>,
    /// Who narrowed `pick`, for the answer when no machine matches it.
    pub(crate) by: By,
}

/// Who narrowed a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum By {
    /// The client, with a `fly-force-*` header.
    #[default]
    Client,
    /// A machine, with `fly-replay`.
    Replay,
}

/// A region list (`"iad,ord,eu,any"`): its tiers in the order given, an alias being one
/// tier, and whether `any` (every region) closes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Regions {
    pub(crate) tiers: Vec<Vec<String>>,
    pub(crate) any: bool,
}

/// Ranks machines for one request: its preferred tiers first, in order (nearest first
/// within a tier), then every other machine by closeness.
#[derive(Debug)]
pub(crate) struct Ranking<'a> {
    closeness: &'a Closeness,
    prefer: &'a [Pick],
}

/// Parses a comma-separated region list; `what` names it in the error.
pub(crate) fn parse_regions(list: &str, what: &str) -> Result<Regions, String> {
    let mut regions = Regions::default();
    for name in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        let name = name.to_ascii_lowercase();
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!(
                "{what}: {name:?} is not a region code: use codes such as iad,ord or the \
                 aliases any, eu, na, us, usa, sa, apac"
            ));
        }
        if name == "any" {
            regions.any = true;
            break;
        }
        let tier = match ALIASES.iter().find(|(alias, _)| *alias == name) {
            Some((_, codes)) => codes.iter().map(|c| (*c).to_owned()).collect(),
            None => vec![name],
        };
        regions.tiers.push(tier);
    }
    if regions.tiers.is_empty() && !regions.any {
        return Err(format!("{what} names no region: use e.g. iad,ord or any"));
    }
    Ok(regions)
}

// === impl Route ===

impl Route {
    /// Any machine, nearest first: a request without routing headers.
    pub(crate) fn any() -> Self {
        Route::default()
    }

    /// The route the client's routing headers ask for; an error names the bad header and
    /// what it takes.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Route, String> {
        let value = |name: &HeaderName| -> Result<Option<&str>, String> {
            match headers.get(name) {
                None => Ok(None),
                Some(value) => value
                    .to_str()
                    .map(|v| Some(v.trim()))
                    .map_err(|_| format!("{name} is not ASCII text")),
            }
        };
        let force_instance = value(&FLY_FORCE_INSTANCE)?;
        let force_region = value(&FLY_FORCE_REGION)?;
        let prefer_instance = value(&FLY_PREFER_INSTANCE)?;
        let prefer_region = value(&FLY_PREFER_REGION)?;
        let mut route = Route::any();
        match (force_instance, force_region) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{FLY_FORCE_INSTANCE} and {FLY_FORCE_REGION} together: send one of them"
                ));
            }
            (Some(id), None) => route.pick = Pick::Instance(machine_id(id, &FLY_FORCE_INSTANCE)?),
            (None, Some(list)) => {
                let regions = parse_regions(list, FLY_FORCE_REGION.as_str())?;
                if !regions.any {
                    route.pick = Pick::Regions {
                        regions: regions.tiers.concat(),
                        except: None,
                    };
                }
                if regions.tiers.len() > 1 || regions.any {
                    route.prefer.extend(tier_picks(&regions));
                }
            }
            (None, None) => {}
        }
        if let Some(id) = prefer_instance {
            let id = machine_id(id, &FLY_PREFER_INSTANCE)?;
            route.prefer.insert(0, Pick::Instance(id));
        }
        if let Some(list) = prefer_region {
            let regions = parse_regions(list, FLY_PREFER_REGION.as_str())?;
            route.prefer.extend(tier_picks(&regions));
        }
        Ok(route)
    }

    /// Whether `target` may serve the request.
    pub(crate) fn allows(&self, target: &Target) -> bool {
        self.pick.allows(target)
    }

    /// Whether the request goes to one machine only: a refused connection is tried on it
    /// again rather than on another machine.
    pub(crate) fn pins(&self) -> bool {
        matches!(self.pick, Pick::Instance(_))
    }

    /// The machine preferred by id, if any.
    pub(crate) fn preferred_instance(&self) -> Option<&str> {
        self.prefer.iter().find_map(|p| match p {
            Pick::Instance(id) => Some(id.as_str()),
            _ => None,
        })
    }

    /// Tells the machine chosen that the preferred one was not (or takes that back when a
    /// retry lands on the preferred one after all).
    pub(crate) fn mark_chosen(&self, headers: &mut HeaderMap, chosen: &Target) {
        let Some(preferred) = self.preferred_instance() else {
            return;
        };
        if chosen.machine_id == preferred {
            headers.remove(FLY_PREFERRED_UNAVAILABLE);
        } else if let Ok(value) = HeaderValue::from_str(preferred) {
            headers.insert(FLY_PREFERRED_UNAVAILABLE, value);
        }
    }

    pub(crate) fn ranking<'a>(&'a self, closeness: &'a Closeness) -> Ranking<'a> {
        Ranking {
            closeness,
            prefer: &self.prefer,
        }
    }

    /// The answer when no machine of `app` matches the route at all.
    pub(crate) fn no_match(&self, app: &str) -> (StatusCode, &'static str, String) {
        match (&self.by, &self.pick) {
            (By::Replay, pick) => (
                StatusCode::BAD_GATEWAY,
                "PA04",
                format!("no machine matches the replay target {pick:?}"),
            ),
            (By::Client, Pick::Instance(id)) => (
                StatusCode::NOT_FOUND,
                "PR02",
                format!(
                    "app {app} has no machine {id} that can serve ({FLY_FORCE_INSTANCE}): \
                     send the id of one of its machines, or drop the header"
                ),
            ),
            (By::Client, Pick::Regions { regions, .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "PR01",
                format!(
                    "app {app} has no machine in {} ({FLY_FORCE_REGION}): name regions it \
                     runs in, use {FLY_PREFER_REGION} to fall back, or drop the header",
                    regions.join(",")
                ),
            ),
            (By::Client, pick) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "PR01",
                format!("no machine of app {app} matches {pick:?}"),
            ),
        }
    }
}

/// A machine id from a header: not empty.
fn machine_id(value: &str, header: &HeaderName) -> Result<String, String> {
    if value.is_empty() {
        return Err(format!("{header} is empty: send a machine id"));
    }
    Ok(value.to_owned())
}

/// One preference tier per tier of `regions` (after them, with `any`, every other machine
/// ranks by closeness as usual).
fn tier_picks(regions: &Regions) -> impl Iterator<Item = Pick> + '_ {
    regions.tiers.iter().map(|tier| Pick::Regions {
        regions: tier.clone(),
        except: None,
    })
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

// === impl Ranking ===

impl Ranks for Ranking<'_> {
    fn rank_of(&self, target: &Target) -> Rank {
        let near = self.closeness.rank(&target.region);
        match self.prefer.iter().position(|p| p.allows(target)) {
            Some(tier) => Rank::Preferred(tier, Box::new(near)),
            None => near,
        }
    }
}

#[cfg(test)]
mod tests;
