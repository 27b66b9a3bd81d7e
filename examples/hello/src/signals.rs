//! SIGTERM/SIGINT handling with nothing but the C library std already links.
//!
//! The handler writes `shutting down` to stdout and calls `_exit(0)`: both are async-signal-safe,
//! and stdout is line-buffered so nothing printed earlier is lost.

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;
const MESSAGE: &[u8] = b"shutting down\n";

/// Installs the handler for SIGTERM and SIGINT.
pub(crate) fn install() {
    ffi::set_handler(SIGINT, on_signal);
    ffi::set_handler(SIGTERM, on_signal);
}

extern "C" fn on_signal(_signal: i32) {
    ffi::write_stdout(MESSAGE);
    ffi::exit_now(0);
}

#[allow(unsafe_code)]
mod ffi {
    // SAFETY: these are the C library's own prototypes on Linux (x86_64 and aarch64):
    // `sighandler_t signal(int, sighandler_t)`, `ssize_t write(int, const void *, size_t)`,
    // `void _exit(int)`.
    unsafe extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
        fn write(fd: i32, buf: *const u8, count: usize) -> isize;
        fn _exit(status: i32) -> !;
    }

    pub(super) fn set_handler(signum: i32, handler: extern "C" fn(i32)) {
        // SAFETY: `handler` only calls async-signal-safe functions (write, _exit).
        unsafe {
            signal(signum, handler);
        }
    }

    pub(super) fn write_stdout(bytes: &[u8]) {
        // SAFETY: the pointer and length come from a live slice.
        unsafe {
            write(1, bytes.as_ptr(), bytes.len());
        }
    }

    pub(super) fn exit_now(code: i32) -> ! {
        // SAFETY: `_exit` ends the process without running anything else; always sound.
        unsafe { _exit(code) }
    }
}
