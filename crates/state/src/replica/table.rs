//! The replica's values, merged from one or more sources (a bucket, or a region's bucket
//! and its mirrors of every other region's), and which source holds each key.

use std::collections::HashMap;

use super::Change;

/// One decoded entry of a source's stream.
pub(super) enum Update<T> {
    Put {
        key: String,
        value: T,
        revision: u64,
    },
    Delete {
        key: String,
    },
}

/// Where a value came from: its source and the revision (stream sequence) that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    source: usize,
    revision: u64,
}

/// The values of every source in one map (keys are unique across sources), with the origin
/// of each and which sources have finished their initial load.
pub(super) struct Table<T> {
    pub(super) values: HashMap<String, T>,
    entries: HashMap<String, Entry>,
    loaded: Vec<bool>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table::new(1)
    }
}

impl<T> Table<T> {
    /// An empty table over `sources` sources, none of them loaded yet.
    pub(super) fn new(sources: usize) -> Self {
        Table {
            values: HashMap::new(),
            entries: HashMap::new(),
            loaded: vec![false; sources],
        }
    }
}

impl<T: Clone> Table<T> {
    /// Whether every source has finished its initial load.
    pub(super) fn all_loaded(&self) -> bool {
        self.loaded.iter().all(|loaded| *loaded)
    }

    /// Applies `update` from `source`; returns the change, or `None` when nothing changed.
    ///
    /// A delete only removes a key that `source` holds: when a record moved from one source
    /// to another, the old source's delete may arrive after the new source's put.
    pub(super) fn apply(&mut self, source: usize, update: Update<T>) -> Option<Change<T>> {
        match update {
            Update::Put {
                key,
                value,
                revision,
            } => {
                let entry = Entry { source, revision };
                if let Some(old) = self.entries.insert(key.clone(), entry)
                    && old.source != source
                {
                    tracing::debug!(%key, from = old.source, to = source, "key moved between sources");
                }
                self.values.insert(key.clone(), value.clone());
                Some(Change::Put {
                    key,
                    value,
                    revision,
                })
            }
            Update::Delete { key } => {
                if self
                    .entries
                    .get(&key)
                    .is_none_or(|entry| entry.source != source)
                {
                    return None;
                }
                self.entries.remove(&key);
                self.values.remove(&key).map(|_| Change::Delete { key })
            }
        }
    }

    /// Replaces what `source` holds with `loaded` (a table filled from that source alone),
    /// marks `source` loaded, and returns what changed.
    pub(super) fn replace(&mut self, source: usize, loaded: Table<T>) -> Vec<Change<T>> {
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(key, entry)| entry.source == source && !loaded.values.contains_key(*key))
            .map(|(key, _)| key.clone())
            .collect();
        let mut changes = Vec::with_capacity(gone.len() + loaded.values.len());
        for key in gone {
            self.entries.remove(&key);
            self.values.remove(&key);
            changes.push(Change::Delete { key });
        }
        let Table {
            values, entries, ..
        } = loaded;
        for (key, value) in values {
            let revision = entries.get(&key).map_or(0, |entry| entry.revision);
            let entry = Entry { source, revision };
            if self.entries.get(&key) != Some(&entry) {
                changes.push(Change::Put {
                    key: key.clone(),
                    value: value.clone(),
                    revision,
                });
            }
            self.entries.insert(key.clone(), entry);
            self.values.insert(key, value);
        }
        if let Some(loaded) = self.loaded.get_mut(source) {
            *loaded = true;
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: u32, revision: u64) -> Update<u32> {
        Update::Put {
            key: key.to_owned(),
            value,
            revision,
        }
    }

    fn delete(key: &str) -> Update<u32> {
        Update::Delete {
            key: key.to_owned(),
        }
    }

    #[test]
    fn a_delete_only_removes_its_own_sources_key() {
        let mut table = Table::new(2);
        assert!(table.apply(0, put("m", 1, 7)).is_some());
        // The record moved to source 1; source 0's delete comes late.
        assert!(table.apply(1, put("m", 2, 3)).is_some());
        assert!(table.apply(0, delete("m")).is_none());
        assert_eq!(table.values.get("m"), Some(&2));
        assert!(table.apply(1, delete("m")).is_some());
        assert!(table.values.is_empty());
    }

    #[test]
    fn replace_touches_only_its_source_and_tracks_loading() {
        let mut table = Table::new(2);
        table.apply(0, put("a", 1, 1));
        table.apply(0, put("b", 1, 2));
        table.apply(1, put("x", 9, 1));
        let mut loaded = Table::default();
        loaded.apply(0, put("a", 1, 1));
        loaded.apply(0, put("c", 3, 5));
        let changes = table.replace(0, loaded);
        assert!(!table.all_loaded(), "source 1 has not loaded");
        let mut described: Vec<String> = changes
            .iter()
            .map(|change| match change {
                Change::Put { key, .. } => format!("put {key}"),
                Change::Delete { key } => format!("delete {key}"),
            })
            .collect();
        described.sort();
        assert_eq!(described, ["delete b", "put c"]);
        let mut keys: Vec<&String> = table.values.keys().collect();
        keys.sort();
        assert_eq!(keys, ["a", "c", "x"]);
        assert!(
            table
                .replace(1, {
                    let mut loaded = Table::default();
                    loaded.apply(0, put("x", 9, 1));
                    loaded
                })
                .is_empty()
        );
        assert!(table.all_loaded());
    }
}
