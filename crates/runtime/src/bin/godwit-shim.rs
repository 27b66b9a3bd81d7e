//! Standalone shim binary (tests use it; production runs `godwit shim ...`).

fn main() -> std::process::ExitCode {
    godwit_runtime::shim_main(std::env::args().skip(1).collect())
}
