//! Service health checks gate routing: a machine whose `servicecheck-*` result is critical
//! takes no requests; one whose checks have not passed yet (warning) only when no passing
//! machine can.

use godwit_types::{CheckResult, CheckStatus};

/// The prefix of the check results the agent publishes for service checks.
const SERVICE_CHECK_PREFIX: &str = "servicecheck-";

/// A machine's service health, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Health {
    /// Some service check is critical: not a candidate.
    Critical,
    /// Some service check has not passed yet: a candidate only when no passing one is.
    Warning,
    /// Every service check passes, or there are none.
    Passing,
}

impl Health {
    /// The health the service checks among `checks` give.
    pub(crate) fn of(checks: &[CheckResult]) -> Health {
        checks
            .iter()
            .filter(|c| c.name.starts_with(SERVICE_CHECK_PREFIX))
            .map(|c| match c.status {
                CheckStatus::Critical => Health::Critical,
                CheckStatus::Warning => Health::Warning,
                CheckStatus::Passing => Health::Passing,
            })
            .min()
            .unwrap_or(Health::Passing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, status: CheckStatus) -> CheckResult {
        CheckResult {
            name: name.to_owned(),
            status,
            output: String::new(),
            updated_at: 0,
        }
    }

    #[test]
    fn the_worst_service_check_wins_and_others_are_ignored() {
        assert_eq!(Health::of(&[]), Health::Passing);
        let only_machine_check = [check("alive", CheckStatus::Critical)];
        assert_eq!(Health::of(&only_machine_check), Health::Passing);
        let warning = [
            check("servicecheck-00-http-8080", CheckStatus::Passing),
            check("servicecheck-01-tcp-8080", CheckStatus::Warning),
        ];
        assert_eq!(Health::of(&warning), Health::Warning);
        let critical = [
            check("servicecheck-00-http-8080", CheckStatus::Critical),
            check("servicecheck-01-tcp-8080", CheckStatus::Warning),
        ];
        assert_eq!(Health::of(&critical), Health::Critical);
    }
}
