//! Random access to the files of a tar archive without extracting it: one pass records where
//! each file's bytes start, then reads seek straight there.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::ImageError;

#[derive(Debug)]
pub(super) struct TarIndex {
    path: PathBuf,
    /// File name (cleaned) → (offset of its data, size).
    files: HashMap<String, (u64, u64)>,
}

impl TarIndex {
    pub(super) fn scan(path: &Path) -> Result<Self, ImageError> {
        let file = File::open(path).map_err(ImageError::io("open", path))?;
        let mut archive = tar::Archive::new(BufReader::new(file));
        let mut files = HashMap::new();
        let mut links = Vec::new();
        for entry in archive
            .entries_with_seek()
            .map_err(ImageError::io("read archive", path))?
        {
            let entry = entry.map_err(ImageError::io("read archive", path))?;
            let name = clean(&String::from_utf8_lossy(&entry.path_bytes()));
            let kind = entry.header().entry_type();
            match kind {
                EntryType::Regular | EntryType::Continuous => {
                    files.insert(name, (entry.raw_file_position(), entry.size()));
                }
                EntryType::Symlink | EntryType::Link => {
                    if let Some(target) = entry.link_name_bytes() {
                        let target = String::from_utf8_lossy(&target).into_owned();
                        // Symlinks are relative to their own directory, hard links to the root.
                        let target = match (kind, name.rsplit_once('/')) {
                            (EntryType::Symlink, Some((dir, _))) => format!("{dir}/{target}"),
                            _ => target,
                        };
                        links.push((name, clean(&target)));
                    }
                }
                _ => {}
            }
        }
        // Resolve links (docker save links repeated layers) a few levels deep.
        for _ in 0..4 {
            for (name, target) in &links {
                if let Some(found) = files.get(target).copied() {
                    files.entry(name.clone()).or_insert(found);
                }
            }
        }
        Ok(Self {
            path: path.to_owned(),
            files,
        })
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.files.contains_key(&clean(name))
    }

    pub(super) fn size(&self, name: &str) -> Result<u64, ImageError> {
        Ok(self.find(name)?.1)
    }

    pub(super) fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, ImageError> {
        let (offset, size) = self.find(name)?;
        let mut file = File::open(&self.path).map_err(ImageError::io("open", &self.path))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(ImageError::io("seek in", &self.path))?;
        Ok(Box::new(BufReader::new(file).take(size)))
    }

    fn find(&self, name: &str) -> Result<(u64, u64), ImageError> {
        self.files
            .get(&clean(name))
            .copied()
            .ok_or_else(|| ImageError::NotFound {
                reference: self.path.display().to_string(),
                reason: format!("archive has no file {name:?}"),
            })
    }
}

/// Normalises a path inside the archive: no `./`, no empty parts, `..` applied.
fn clean(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn clean_normalises() {
        assert_eq!(clean("./index.json"), "index.json");
        assert_eq!(clean("abc/../def//layer.tar"), "def/layer.tar");
        assert_eq!(clean("/../../x"), "x");
    }
}
