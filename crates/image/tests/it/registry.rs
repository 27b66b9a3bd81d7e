//! Pulling from Debian's docker-registry on loopback, with images pushed by skopeo.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use godwit_image::{ImageError, PullOptions};

use crate::support::*;

const REGISTRY: &str = "/usr/bin/docker-registry";
const SKOPEO: &str = "/usr/bin/skopeo";
const USER: &str = "godwit";
const PASSWORD: &str = "godwit-test-pw";
/// bcrypt of PASSWORD (static test data; docker-registry only reads bcrypt htpasswd files).
const PASSWORD_BCRYPT: &str = "$2a$04$5zSvtAYgvyxHwfdbq.yXB.H2hQqybFmpwss7lKpOuELk0D2EG9t0a";

/// A docker-registry process on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    addr: SocketAddr,
}

impl Registry {
    fn must_start(dir: &Path, with_auth: bool) -> Self {
        must_have_tool(REGISTRY, "docker-registry");
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let storage = dir.join("registry-storage");
        std::fs::create_dir_all(&storage).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            storage.display()
        );
        if with_auth {
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, format!("{USER}:{PASSWORD_BCRYPT}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: godwit-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.join("registry.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut registry = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = registry.child.try_wait().unwrap() {
                panic!("docker-registry exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(10)); // poll interval, not synchronisation
        }
        registry
    }

    fn must_push(&self, layout: &Path, repo: &str, creds: Option<&str>) {
        let mut cmd = Command::new(SKOPEO);
        cmd.args(["copy", "--dest-tls-verify=false"]);
        if let Some(creds) = creds {
            cmd.args(["--dest-creds", creds]);
        }
        cmd.arg(format!("oci:{}:{TAG}", layout.display()));
        cmd.arg(format!("docker://{}/{repo}", self.addr));
        must_run(&mut cmd);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn pull_by_tag_and_by_digest() {
    must_have_tool(SKOPEO, "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let (layout, digest) = must_build_busybox(dir.path());
    let registry = Registry::must_start(dir.path(), false);
    registry.must_push(&layout, "hello:1", None);

    let store = must_open_store(dir.path());
    let by_tag = format!("{}/hello:1", registry.addr);
    let image = store.pull(&by_tag, &PullOptions::default()).await.unwrap();
    assert_eq!(image.reference, by_tag);
    assert_eq!(image.manifest_digest, digest);
    assert_busybox_image(&image);

    let by_digest = format!("{}/hello@{digest}", registry.addr);
    let pinned = store
        .pull(&by_digest, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pinned.manifest_digest, digest);
    assert_eq!(pinned.layers, image.layers);

    let missing = format!("{}/hello:404", registry.addr);
    let err = store
        .pull(&missing, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Registry { .. }), "{err:?}");

    // With the registry gone, the pinned reference is still served from the cache.
    drop(registry);
    let offline = store
        .pull(&by_digest, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(offline.manifest_digest, digest);
    assert_eq!(offline.layers, image.layers);
    assert!(store.pull(&by_tag, &PullOptions::default()).await.is_err());
    assert!(leftover_tmp(&store).is_empty());
}

#[tokio::test]
async fn pull_with_basic_auth() {
    must_have_tool(SKOPEO, "skopeo");
    let dir = tempfile::tempdir().unwrap();
    let (layout, digest) = must_build_busybox(dir.path());
    let registry = Registry::must_start(dir.path(), true);
    registry.must_push(&layout, "private:1", Some(&format!("{USER}:{PASSWORD}")));

    let store = must_open_store(dir.path());
    let reference = format!("{}/private:1", registry.addr);
    let anonymous = store.pull(&reference, &PullOptions::default()).await;
    assert!(anonymous.is_err(), "anonymous pull must be refused");
    let wrong = PullOptions {
        username: Some(USER.into()),
        password: Some("wrong".into()),
        ..PullOptions::default()
    };
    assert!(store.pull(&reference, &wrong).await.is_err());

    let opts = PullOptions {
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        ..PullOptions::default()
    };
    let image = store.pull(&reference, &opts).await.unwrap();
    assert_eq!(image.manifest_digest, digest);
    assert_busybox_image(&image);
}
