//! A machine's logs survive an update: the runtime's `destroy` + `prepare` re-makes the whole
//! machine dir (logs included), so the update moves the log files to
//! `<data_dir>/kept-logs/<id>/` first and back into the fresh logs dir after. Both moves are
//! idempotent, so an update resumed after a crash in between loses nothing. Best effort: a
//! failure is logged and never fails the update.

use std::io;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use crate::agent::Agent;

/// Moves the machine's log files aside (those already kept stay as they are).
pub(super) fn keep(agent: &Agent, id: &str) {
    let (Some(logs), kept) = (logs_dir(agent, id), kept_dir(agent, id)) else {
        return;
    };
    if let Err(error) = move_files(&logs, &kept, false) {
        warn!(machine_id = %id, %error, "failed to keep the machine's logs across the update");
    }
}

/// Moves kept log files back into the machine's (new) logs dir and forgets the kept dir.
pub(super) fn restore(agent: &Agent, id: &str) {
    let (Some(logs), kept) = (logs_dir(agent, id), kept_dir(agent, id)) else {
        return;
    };
    if !kept.exists() {
        return;
    }
    let restored = move_files(&kept, &logs, true).and_then(|()| std::fs::remove_dir(&kept));
    match restored {
        Ok(()) => debug!(machine_id = %id, "restored the machine's logs after the update"),
        Err(error) => {
            warn!(machine_id = %id, %error, "failed to restore the machine's logs after the update");
        }
    }
}

/// Removes whatever an interrupted update kept of a machine being destroyed.
pub(super) fn discard(agent: &Agent, id: &str) {
    let kept = kept_dir(agent, id);
    match std::fs::remove_dir_all(&kept) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            warn!(machine_id = %id, %error, path = %kept.display(), "failed to remove kept logs");
        }
        _ => {}
    }
}

/// The dir of the machine's log files (the runtime names the current file last).
fn logs_dir(agent: &Agent, id: &str) -> Option<PathBuf> {
    let current = agent.runtime.log_files(id).pop()?;
    current.parent().map(Path::to_path_buf)
}

fn kept_dir(agent: &Agent, id: &str) -> PathBuf {
    agent.cfg.data_dir.join("kept-logs").join(id)
}

/// Moves every plain file of `from` (if it exists) into `to`; an existing target is replaced
/// only if `replace`.
fn move_files(from: &Path, to: &Path, replace: bool) -> io::Result<()> {
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    std::fs::create_dir_all(to)?;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let target = to.join(entry.file_name());
        if !replace && target.exists() {
            continue;
        }
        move_file(&entry.path(), &target)?;
    }
    Ok(())
}

/// `rename`, or copy + remove across file systems.
fn move_file(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(error) if error.raw_os_error() == Some(nix::libc::EXDEV) => {
            std::fs::copy(from, to)?;
            std::fs::remove_file(from)
        }
        other => other,
    }
}
