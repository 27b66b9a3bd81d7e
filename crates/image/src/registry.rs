//! Pulling from a registry over the OCI distribution API (via `oci-client`: token and basic
//! auth, manifest lists resolved to linux/amd64, blob digests verified while downloading).

use std::sync::Arc;

use oci_client::client::{ClientConfig, ClientProtocol, linux_amd64_resolver};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tracing::debug;

use crate::digest::Digest;
use crate::oci::{ConfigFile, Descriptor};
use crate::reference::is_loopback_registry;
use crate::store::{Cache, PinRecord};
use crate::unpack::{self, LayerPlan};
use crate::{Image, ImageError, PullOptions};

pub(crate) async fn pull(
    cache: &Arc<Cache>,
    reference: Reference,
    given: &str,
    opts: &PullOptions,
) -> Result<Image, ImageError> {
    let pinned = reference.digest().map(Digest::parse).transpose()?;
    if let Some(pinned) = &pinned
        && let Some(image) = cache.load_pin(given, pinned)
    {
        debug!("pinned image already cached");
        return Ok(image);
    }
    let registry_err = |source| ImageError::Registry {
        reference: given.to_owned(),
        source,
    };
    let client = client_for(&reference, opts);
    let auth = match &opts.username {
        Some(user) => RegistryAuth::Basic(user.clone(), opts.password.clone().unwrap_or_default()),
        None => RegistryAuth::Anonymous,
    };
    let (manifest, manifest_digest, _list_digest) = client
        .pull_image_manifest_and_list_digest(&reference, &auth)
        .await
        .map_err(registry_err)?;
    let manifest_digest = Digest::parse(&manifest_digest)?;

    let mut config_bytes = Vec::new();
    client
        .pull_blob(&reference, &manifest.config, &mut config_bytes)
        .await
        .map_err(registry_err)?;
    Digest::of(&config_bytes).verify(&Digest::parse(&manifest.config.digest)?, "image config")?;
    let config: ConfigFile =
        serde_json::from_slice(&config_bytes).map_err(ImageError::json("image config"))?;

    let descriptors: Vec<Descriptor> = manifest
        .layers
        .iter()
        .map(|l| Descriptor {
            media_type: l.media_type.clone(),
            digest: l.digest.clone(),
            size: u64::try_from(l.size).unwrap_or(0),
            annotations: Default::default(),
            platform: None,
        })
        .collect();
    let plans = crate::local::plan_layers(&descriptors, &config)?;
    let mut layers = Vec::with_capacity(plans.len());
    for (plan, descriptor) in plans.into_iter().zip(&manifest.layers) {
        let dir = cache.layer_dir(&plan.key);
        if !dir.is_dir() {
            fetch_and_unpack(cache, &client, &reference, descriptor, plan, given).await?;
        }
        layers.push(dir);
    }

    let image = Image {
        reference: given.to_owned(),
        manifest_digest: manifest_digest.to_string(),
        config: config.image_config(),
        layers,
    };
    if let Some(pinned) = &pinned {
        let record = PinRecord {
            manifest_digest: image.manifest_digest.clone(),
            config: image.config.clone(),
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
        };
        cache.save_pin(pinned, &record)?;
    }
    Ok(image)
}

/// Downloads one layer blob to a temp file (digest checked by the client), then unpacks it.
async fn fetch_and_unpack(
    cache: &Arc<Cache>,
    client: &Client,
    reference: &Reference,
    descriptor: &oci_client::manifest::OciDescriptor,
    plan: LayerPlan,
    given: &str,
) -> Result<(), ImageError> {
    debug!(layer = %plan.key, size = descriptor.size, "downloading layer");
    let download = tempfile::NamedTempFile::new_in(cache.tmp_dir())
        .map_err(ImageError::io("create temp file in", cache.tmp_dir()))?;
    let writer = download
        .reopen()
        .map_err(ImageError::io("open", download.path().to_owned()))?;
    let mut writer = tokio::fs::File::from_std(writer);
    client
        .pull_blob(reference, descriptor, &mut writer)
        .await
        .map_err(|source| ImageError::Registry {
            reference: given.to_owned(),
            source,
        })?;
    drop(writer);
    let cache = Arc::clone(cache);
    tokio::task::spawn_blocking(move || {
        let blob = download
            .reopen()
            .map_err(ImageError::io("open", download.path().to_owned()))?;
        unpack::ensure_layer(&cache, &plan, std::io::BufReader::new(blob)).map(drop)
    })
    .await
    .map_err(ImageError::Task)?
}

fn client_for(reference: &Reference, opts: &PullOptions) -> Client {
    let mut plain_http = opts.insecure_registries.clone();
    let registry = reference.resolve_registry().to_owned();
    if is_loopback_registry(&registry) {
        plain_http.push(registry);
    }
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain_http),
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        ..ClientConfig::default()
    })
}
