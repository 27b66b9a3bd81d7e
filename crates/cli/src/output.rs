//! What the CLI shows: lines on stdout, warnings on stderr, JSON, tables and deploy progress.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Writes one line to stdout. A closed stdout (`| head`) is not an error.
pub(crate) fn say(message: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{message}");
}

/// Writes one line to stderr.
pub(crate) fn warn(message: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "warning: {message}");
}

/// Writes one line to stderr, unprefixed (progress, details of a failure).
pub(crate) fn note(message: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    say(text);
    Ok(())
}

/// Prints rows as aligned columns under a header.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let render = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        line.trim_end().to_owned()
    };
    say(render(header.to_vec()));
    for row in rows {
        say(render(row.iter().map(String::as_str).collect()));
    }
}

/// A Unix timestamp as RFC 3339 (UTC, seconds). Values too small to be milliseconds of this
/// century are taken as seconds.
pub(crate) fn timestamp(value: u64) -> String {
    let ms = if value < 100_000_000_000 {
        value * 1000
    } else {
        value
    };
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Progress of a long command: a spinner on a terminal, plain lines otherwise. Both on stderr.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    /// The last step shown, so a repeated one is not printed again.
    last: std::sync::Mutex<String>,
}

impl Progress {
    pub(crate) fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            last: std::sync::Mutex::default(),
        }
    }

    /// Shows what is happening now (a plain line when not on a terminal).
    pub(crate) fn step(&self, message: impl Into<String>) {
        let message = message.into();
        if let Ok(mut last) = self.last.lock() {
            if *last == message {
                return;
            }
            last.clone_from(&message);
        }
        match &self.bar {
            Some(bar) => bar.set_message(message),
            None => note(format!("==> {message}")),
        }
    }

    /// Prints a line that stays.
    pub(crate) fn done(&self, message: impl std::fmt::Display) {
        match &self.bar {
            Some(bar) => bar.println(format!("✔ {message}")),
            None => note(format!("✔ {message}")),
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
