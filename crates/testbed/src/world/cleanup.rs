//! What the world's agents leave on the box when they cannot clean up themselves (killed, or
//! their host cut off): machine namespaces and the processes in them, cgroups, and overlay
//! mounts under the data dir (the last two through [`crate::cleanup`]).

use std::path::Path;

use super::StopError;

/// The agent name prefix of host number `n` (1-based, at most 99) of the world `prefix`:
/// `w` + 3 base-36 digits of a hash of the prefix + `n`, so that at most 6 characters, and
/// the same for a rerun with the same prefix (which can then sweep a killed run's debris).
pub fn host_tag(prefix: &str, n: u32) -> String {
    // FNV-1a: stable across runs and Rust versions, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in prefix.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut tag = String::from("w");
    for _ in 0..3 {
        let digit = usize::try_from(hash % 36).expect("below 36");
        tag.push(char::from(DIGITS[digit]));
        hash /= 36;
    }
    format!("{tag}{n}")
}

/// Deletes the machine namespaces of agent name prefix `tag` (killing what runs in them).
pub(super) fn sweep_machine_netns(tag: &str, errors: &mut Vec<StopError>) {
    match crate::sweep(tag) {
        Ok(0) => {}
        Ok(n) => tracing::info!(tag, netns = n, "swept machine namespaces"),
        Err(source) => errors.push(StopError::Sweep {
            prefix: tag.to_owned(),
            source,
        }),
    }
}

/// Removes the cgroups runc made for agent name prefix `tag` (killing what is left in them).
pub(super) fn remove_cgroups(tag: &str, errors: &mut Vec<StopError>) {
    let mut swept = crate::cleanup::Swept::default();
    crate::cleanup::remove_cgroups(tag, &mut swept);
    errors.extend(swept.failed.into_iter().map(StopError::Leftover));
}

/// Unmounts (lazily, deepest first) every mount point under `dir`.
pub(super) fn unmount_under(dir: &Path, errors: &mut Vec<StopError>) {
    let mut swept = crate::cleanup::Swept::default();
    crate::cleanup::unmount_under(dir, &mut swept);
    errors.extend(swept.failed.into_iter().map(StopError::Leftover));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_tags_are_short_stable_and_distinct() {
        let tag = host_tag("gwe2ew", 12);
        assert_eq!(tag, host_tag("gwe2ew", 12));
        assert!(tag.len() <= 6, "{tag}");
        assert!(tag.starts_with('w'), "{tag}");
        assert!(
            tag.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{tag}"
        );
        assert_ne!(host_tag("gwe2ew", 1), host_tag("gwe2ew", 2));
        assert_ne!(host_tag("a", 1), host_tag("b", 1));
    }
}
