//! Integration tests of godwit-bench against real runc, real netns and a real busybox image.
//! They need root, `runc` and `/bin/busybox` (Debian: runc, busybox-static).

mod baseline;
