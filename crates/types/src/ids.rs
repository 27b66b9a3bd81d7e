//! Identifiers and name rules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A machine id: 14 lowercase hex characters, as in the reference system.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MachineId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    #[error("machine id {0:?} is not 14 lowercase hex characters")]
    Machine(String),
    #[error(
        "app name {0:?} is invalid: use 2-63 characters of lowercase letters, digits and '-', starting with a letter"
    )]
    AppName(String),
}

impl MachineId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let n: u64 = rand::random();
        Self(format!("{:014x}", n & 0x00ff_ffff_ffff_ffff))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MachineId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 14
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseIdError::Machine(s.to_owned()))
        }
    }
}

impl TryFrom<String> for MachineId {
    type Error = ParseIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MachineId> for String {
    fn from(id: MachineId) -> Self {
        id.0
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an app (or org) name: DNS-label safe, since it becomes `<app>.<domain>`.
pub fn validate_app_name(name: &str) -> Result<(), ParseIdError> {
    let ok = (2..=63).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ParseIdError::AppName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse() {
        for _ in 0..100 {
            let id = MachineId::generate();
            assert_eq!(id.as_str().parse::<MachineId>().unwrap(), id);
        }
    }

    #[test]
    fn bad_ids_are_refused() {
        assert!("ABCDEF01234567".parse::<MachineId>().is_err());
        assert!("abc".parse::<MachineId>().is_err());
        assert!("../../etc/pass".parse::<MachineId>().is_err());
    }

    #[test]
    fn app_names() {
        assert!(validate_app_name("hello-world2").is_ok());
        for bad in ["", "a", "Hello", "1abc", "ab_c", "abc-", "a/b"] {
            assert!(validate_app_name(bad).is_err(), "{bad}");
        }
    }
}
