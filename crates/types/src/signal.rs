//! Signal names as `kill_signal` and the stop API accept them.

pub const SIGINT: i32 = 2;

const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", 1),
    ("SIGINT", 2),
    ("SIGQUIT", 3),
    ("SIGKILL", 9),
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
    ("SIGTERM", 15),
    ("SIGSTOP", 19),
];

/// Parses `SIGTERM`, `TERM`, `sigterm` or `15`.
pub fn parse(name: &str) -> Result<i32, String> {
    if let Ok(n) = name.parse::<i32>()
        && SIGNALS.iter().any(|(_, v)| *v == n)
    {
        return Ok(n);
    }
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    SIGNALS
        .iter()
        .find(|(n, _)| *n == full)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
            format!(
                "signal {name:?} is not supported: use one of {}",
                names.join(", ")
            )
        })
}

/// The name of a signal number, for events and logs.
pub fn name(signal: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, v)| *v == signal)
        .map_or_else(|| format!("signal {signal}"), |(n, _)| (*n).to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_names() {
        assert_eq!(super::parse("SIGTERM"), Ok(15));
        assert_eq!(super::parse("term"), Ok(15));
        assert_eq!(super::parse("9"), Ok(9));
        assert!(super::parse("SIGFOO").unwrap_err().contains("SIGTERM"));
    }
}
