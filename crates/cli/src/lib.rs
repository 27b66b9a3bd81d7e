//! godwit-cli: the `godwit` command line and daemon entry points.

/// Runs the `godwit` binary.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
