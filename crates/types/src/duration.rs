//! A duration that reads like the reference system's: `"5s"`, `"1m30s"`, or a bare number of
//! milliseconds (as check intervals accept).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ToSchema)]
#[schema(value_type = String, example = "5s")]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }
}

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(ms) = s.parse::<u64>() {
            return Ok(Self(std::time::Duration::from_millis(ms)));
        }
        humantime::parse_duration(s).map(Self).map_err(|e| {
            format!("{s:?} is not a duration ({e}): write it like \"5s\" or \"1m30s\"")
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(ms) => Ok(Self(std::time::Duration::from_millis(ms))),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strings_and_numbers() {
        assert_eq!("5s".parse::<Duration>().unwrap(), Duration::from_secs(5));
        assert_eq!(
            "1m30s".parse::<Duration>().unwrap(),
            Duration::from_secs(90)
        );
        let d: Duration = serde_json::from_str("1500").unwrap();
        assert_eq!(d.0, std::time::Duration::from_millis(1500));
        assert!("soon".parse::<Duration>().unwrap_err().contains("\"soon\""));
        assert_eq!(
            serde_json::to_string(&Duration::from_secs(5)).unwrap(),
            "\"5s\""
        );
    }
}
