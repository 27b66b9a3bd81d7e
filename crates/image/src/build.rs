//! Building OCI image layouts: from a static binary, or from ready-made layer tars.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::Path;

use flate2::Compression;

use crate::digest::Digest;
use crate::local::descriptor;
use crate::oci::{self, ConfigFile, Index, Manifest, RootFs, RunConfig};
use crate::{ImageConfig, ImageError};

/// What [`build_from_binary`] puts in the image.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The binary's name in the image: it is written to `/<name>` and is the entrypoint.
    pub name: String,
    /// The tag recorded in `index.json` as `org.opencontainers.image.ref.name`.
    pub tag: String,
    pub env: Vec<String>,
    pub exposed_port: Option<u16>,
}

/// Fixed modification time of every entry, so builds are reproducible.
const MTIME: u64 = 0;
const CREATED: &str = "1970-01-01T00:00:00Z";

/// Writes an OCI image layout directory at `out` holding one image whose single layer contains
/// `binary` at `/<name>` (mode 0755) plus the empty dirs `/tmp` and `/etc`; the config sets
/// entrypoint `[/<name>]`, env and the exposed port. Returns the manifest digest. Deterministic:
/// building twice gives the same digest.
pub fn build_from_binary(
    binary: &Path,
    out: &Path,
    opts: &BuildOptions,
) -> Result<String, ImageError> {
    let name = opts.name.as_str();
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(ImageError::InvalidReference {
            reference: name.to_owned(),
            reason: "binary name must be one path component".to_owned(),
        });
    }
    let contents = fs::read(binary).map_err(ImageError::io("read", binary))?;
    let mut layer = tar::Builder::new(Vec::new());
    let tar_err = |source| ImageError::Io {
        action: "build layer for",
        path: binary.to_owned(),
        source,
    };
    append(&mut layer, "etc/", tar::EntryType::Directory, 0o755, &[]).map_err(tar_err)?;
    append(&mut layer, "tmp/", tar::EntryType::Directory, 0o1777, &[]).map_err(tar_err)?;
    append(&mut layer, name, tar::EntryType::Regular, 0o755, &contents).map_err(tar_err)?;
    let layer = layer.into_inner().map_err(tar_err)?;

    let mut env = opts.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    let config = ImageConfig {
        env,
        entrypoint: vec![format!("/{name}")],
        exposed_ports: opts
            .exposed_port
            .map(|p| vec![format!("{p}/tcp")])
            .unwrap_or_default(),
        ..ImageConfig::default()
    };
    build_from_layers(&[layer], &config, out, &opts.tag)
}

/// Writes an OCI image layout at `out` holding one image made of `layers` (uncompressed tars,
/// bottom first, stored gzip-compressed) and `config`, tagged `tag`. Returns the manifest digest.
/// The layers are written as given: this is also how tests build hostile images.
pub fn build_from_layers(
    layers: &[Vec<u8>],
    config: &ImageConfig,
    out: &Path,
    tag: &str,
) -> Result<String, ImageError> {
    let blobs = out.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(ImageError::io("create", &blobs))?;
    let write_blob = |bytes: &[u8]| -> Result<Digest, ImageError> {
        let digest = Digest::of(bytes);
        let path = blobs.join(digest.hex());
        fs::write(&path, bytes).map_err(ImageError::io("write", path))?;
        Ok(digest)
    };

    let mut diff_ids = Vec::new();
    let mut layer_descriptors = Vec::new();
    for layer in layers {
        diff_ids.push(Digest::of(layer).to_string());
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), Compression::default());
        let gz_err = |source| ImageError::Io {
            action: "compress layer into",
            path: out.to_owned(),
            source,
        };
        gz.write_all(layer).map_err(gz_err)?;
        let compressed = gz.finish().map_err(gz_err)?;
        let digest = write_blob(&compressed)?;
        layer_descriptors.push(descriptor(
            oci::MEDIA_LAYER_GZIP,
            &digest,
            compressed.len() as u64,
        ));
    }

    let config_file = ConfigFile {
        created: Some(CREATED.to_owned()),
        architecture: "amd64".to_owned(),
        os: "linux".to_owned(),
        config: Some(run_config(config)),
        rootfs: RootFs {
            kind: "layers".to_owned(),
            diff_ids,
        },
    };
    let config_bytes = to_json(&config_file, "image config")?;
    let config_digest = write_blob(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.to_owned()),
        config: descriptor(oci::MEDIA_CONFIG, &config_digest, config_bytes.len() as u64),
        layers: layer_descriptors,
    };
    let manifest_bytes = to_json(&manifest, "manifest")?;
    let manifest_digest = write_blob(&manifest_bytes)?;

    let mut entry = descriptor(
        oci::MEDIA_MANIFEST,
        &manifest_digest,
        manifest_bytes.len() as u64,
    );
    entry
        .annotations
        .insert(oci::REF_NAME.to_owned(), tag.to_owned());
    let index = Index {
        schema_version: 2,
        media_type: Some(oci::MEDIA_INDEX.to_owned()),
        manifests: vec![entry],
    };
    for (name, bytes) in [
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ("index.json", to_json(&index, "index")?),
    ] {
        let path = out.join(name);
        fs::write(&path, bytes).map_err(ImageError::io("write", path))?;
    }
    Ok(manifest_digest.to_string())
}

fn run_config(config: &ImageConfig) -> RunConfig {
    let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    RunConfig {
        user: config.user.clone(),
        exposed_ports: (!config.exposed_ports.is_empty()).then(|| {
            config
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), serde_json::json!({})))
                .collect::<BTreeMap<_, _>>()
        }),
        env: some_vec(&config.env),
        entrypoint: some_vec(&config.entrypoint),
        cmd: some_vec(&config.cmd),
        working_dir: config.working_dir.clone(),
        labels: (!config.labels.is_empty()).then(|| config.labels.clone()),
    }
}

fn append(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path)?;
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(data.len() as u64);
    header.set_mtime(MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    builder.append(&header, data)
}

fn to_json(value: &impl serde::Serialize, what: &str) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(ImageError::json(what))
}
