//! The one Godwit binary: CLI and every daemon. All logic lives in `godwit-cli`.

fn main() -> std::process::ExitCode {
    godwit_cli::main()
}
