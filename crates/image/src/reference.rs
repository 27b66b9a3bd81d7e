//! Parsing the reference strings that [`crate::ImageStore::pull`] accepts.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::ImageError;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    /// An OCI image layout directory, optionally with the tag to pick from its index.
    Layout { dir: PathBuf, tag: Option<String> },
    /// A `docker save` archive or an OCI layout packed as a tar (told apart by content), with an
    /// optional tag or `name:tag` to pick one image out of several.
    Archive { path: PathBuf, tag: Option<String> },
    /// A registry reference.
    Registry(oci_client::Reference),
}

impl Source {
    pub(crate) fn parse(reference: &str) -> Result<Self, ImageError> {
        let invalid = |reason: &str| ImageError::InvalidReference {
            reference: reference.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = reference.strip_prefix("oci:") {
            let (dir, tag) = split_existing(rest, Path::is_dir)
                .ok_or_else(|| invalid("no such oci layout directory"))?;
            return Ok(Self::Layout { dir, tag });
        }
        for prefix in ["docker-archive:", "oci-archive:"] {
            if let Some(rest) = reference.strip_prefix(prefix) {
                let (path, tag) = split_existing(rest, Path::is_file)
                    .ok_or_else(|| invalid("no such archive file"))?;
                return Ok(Self::Archive { path, tag });
            }
        }
        let path = Path::new(reference);
        if path.is_absolute() || reference.starts_with("./") || reference.starts_with("../") {
            if path.join("oci-layout").is_file() {
                return Ok(Self::Layout {
                    dir: path.to_owned(),
                    tag: None,
                });
            }
            if path.is_file() {
                return Ok(Self::Archive {
                    path: path.to_owned(),
                    tag: None,
                });
            }
            return Err(invalid(
                "path is neither an oci layout directory nor a tar archive",
            ));
        }
        let parsed: oci_client::Reference = reference
            .parse()
            .map_err(|e: oci_client::ParseError| invalid(&e.to_string()))?;
        Ok(Self::Registry(parsed))
    }
}

/// Splits `text` into an existing path and an optional `:tag`, trying the whole text first and
/// then each `:` from the left (tags may themselves hold a `:`, as in `name:tag`).
fn split_existing(text: &str, exists: fn(&Path) -> bool) -> Option<(PathBuf, Option<String>)> {
    if exists(Path::new(text)) {
        return Some((PathBuf::from(text), None));
    }
    text.match_indices(':').find_map(|(at, _)| {
        let (path, tag) = (&text[..at], &text[at + 1..]);
        (exists(Path::new(path)) && !tag.is_empty())
            .then(|| (PathBuf::from(path), Some(tag.to_owned())))
    })
}

/// Whether a registry host (`host[:port]`) is on loopback, so plain HTTP is always allowed.
pub(crate) fn is_loopback_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_references_parse() {
        let Source::Registry(r) = Source::parse("127.0.0.1:5000/hello:1").unwrap() else {
            panic!("not a registry reference");
        };
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "hello");
        assert_eq!(r.tag(), Some("1"));
        let digest = format!("sha256:{}", "b".repeat(64));
        let Source::Registry(r) = Source::parse(&format!("localhost:5000/a/b@{digest}")).unwrap()
        else {
            panic!("not a registry reference");
        };
        assert_eq!(r.digest(), Some(digest.as_str()));
    }

    #[test]
    fn local_references_parse() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        std::fs::write(layout.join("oci-layout"), "{}").unwrap();
        let archive = dir.path().join("img.tar");
        std::fs::write(&archive, "").unwrap();
        let l = layout.display();
        let a = archive.display();
        assert_eq!(
            Source::parse(&format!("oci:{l}:v1")).unwrap(),
            Source::Layout {
                dir: layout.clone(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Source::parse(&l.to_string()).unwrap(),
            Source::Layout {
                dir: layout.clone(),
                tag: None
            }
        );
        assert_eq!(
            Source::parse(&format!("docker-archive:{a}:hello:1")).unwrap(),
            Source::Archive {
                path: archive.clone(),
                tag: Some("hello:1".into())
            }
        );
        assert_eq!(
            Source::parse(&a.to_string()).unwrap(),
            Source::Archive {
                path: archive.clone(),
                tag: None
            }
        );
        assert!(Source::parse("oci:/definitely/not/here").is_err());
    }

    #[test]
    fn loopback_registries() {
        for yes in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:80",
            "[::1]:5000",
            "127.9.9.9",
        ] {
            assert!(is_loopback_registry(yes), "{yes}");
        }
        for no in [
            "docker.io",
            "10.0.0.1:5000",
            "example.com:5000",
            "[fd00::1]:1",
        ] {
            assert!(!is_loopback_registry(no), "{no}");
        }
    }
}
