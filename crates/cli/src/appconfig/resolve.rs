//! Image paths relative to the config file, and `[processes]` commands split into words.

use std::path::{Component, Path, PathBuf};

/// Makes a relative image path (`./x`, `../x`, `x.tar`, `oci:./x[:tag]`,
/// `docker-archive:x.tar`, `oci-archive:x.tar`) absolute against `dir`. Registry references and
/// absolute paths are returned unchanged.
pub fn resolve_image(image: &str, dir: &Path) -> String {
    for prefix in ["oci:", "docker-archive:", "oci-archive:"] {
        if let Some(rest) = image.strip_prefix(prefix) {
            if rest.starts_with('/') {
                return image.to_owned();
            }
            return format!("{prefix}{}", join_normalized(dir, rest));
        }
    }
    let is_relative_path = image.starts_with("./")
        || image.starts_with("../")
        || image == "."
        || (image.ends_with(".tar") && !image.starts_with('/'));
    if is_relative_path {
        join_normalized(dir, image)
    } else {
        image.to_owned()
    }
}

fn join_normalized(dir: &Path, rel: &str) -> String {
    let mut out = PathBuf::new();
    for comp in dir.join(rel).components() {
        match comp {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.display().to_string()
}

/// Splits a `[processes]` command like a shell would (quotes and backslashes; no expansion).
pub fn split_command(cmd: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => match chars.next() {
                Some(n) => current.push(n),
                None => return Err(format!("{cmd:?} ends with a backslash")),
            },
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => match chars.next() {
                Some(n) => {
                    current.push(n);
                    in_word = true;
                }
                None => return Err(format!("{cmd:?} ends with a backslash")),
            },
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            (None, c) => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("{cmd:?} has an unclosed quote"));
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}
