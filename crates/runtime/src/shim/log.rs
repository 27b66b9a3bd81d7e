//! The machine log: JSON lines with size-based rotation (`machine.log`, `machine.log.1` newest
//! rotated, ... `machine.log.<keep>` oldest).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::sys::now_ms;

const CURRENT: &str = "machine.log";

/// Appends log records to the current file, rotating it past `max_bytes`.
#[derive(Debug)]
pub(crate) struct LogWriter {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
}

impl LogWriter {
    pub(crate) fn open(dir: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = open_append(&dir.join(CURRENT))?;
        let size = file.metadata()?.len();
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            keep,
            file,
            size,
        })
    }

    /// Writes one record `{"ts":ms,"stream":..,"line":..}` (invalid UTF-8 is replaced).
    pub(crate) fn write_line(&mut self, stream: &str, line: &[u8]) -> io::Result<()> {
        let record = serde_json::json!({
            "ts": now_ms(),
            "stream": stream,
            "line": String::from_utf8_lossy(line),
        });
        let mut bytes = serde_json::to_vec(&record)?;
        bytes.push(b'\n');
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if self.size > 0 && self.size.saturating_add(len) > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&bytes)?;
        self.size = self.size.saturating_add(len);
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let current = self.dir.join(CURRENT);
        if self.keep == 0 {
            std::fs::remove_file(&current)?;
        } else {
            remove_if_exists(&rotated(&self.dir, self.keep))?;
            for n in (1..self.keep).rev() {
                let from = rotated(&self.dir, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.dir, n + 1))?;
                }
            }
            std::fs::rename(&current, rotated(&self.dir, 1))?;
        }
        self.file = open_append(&current)?;
        self.size = 0;
        Ok(())
    }
}

/// Existing rotated files oldest first, then the current file (listed even if missing).
pub(crate) fn log_files(dir: &Path, keep: usize) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=keep)
        .rev()
        .map(|n| rotated(dir, n))
        .filter(|p| p.exists())
        .collect();
    files.push(dir.join(CURRENT));
    files
}

fn rotated(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{CURRENT}.{n}"))
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogWriter::open(dir.path(), 200, 2).expect("open");
        for i in 0..30 {
            log.write_line("stdout", format!("line number {i:02}").as_bytes())
                .expect("write");
        }
        let files = log_files(dir.path(), 2);
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(files[0].ends_with("machine.log.2"));
        assert!(files[1].ends_with("machine.log.1"));
        assert!(files[2].ends_with("machine.log"));
        for file in &files {
            let len = std::fs::metadata(file).expect("stat").len();
            assert!(len <= 200, "{} has {len} bytes", file.display());
        }
        let last = std::fs::read_to_string(&files[2]).expect("read");
        let record: serde_json::Value =
            serde_json::from_str(last.lines().last().expect("a line")).expect("json");
        assert_eq!(record["line"], "line number 29");
        assert_eq!(record["stream"], "stdout");
        assert!(!dir.path().join("machine.log.3").exists());
    }
}
