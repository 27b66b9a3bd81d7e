//! The bare-runc baseline end to end: prepare with the runtime, `runc run -d` the bundle it
//! wrote, get an HTTP 200 from the container, destroy everything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use godwit_bench::{BareRunc, BaselineConfig, wait_for_200};

/// A test's baseline: unique prefix and subnet; destroys its containers when dropped.
struct Fixture {
    cfg: BaselineConfig,
    reference: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        assert!(
            which("runc").is_some(),
            "runc is not installed: apt-get install -y runc"
        );
        assert!(
            Path::new("/bin/busybox").is_file(),
            "/bin/busybox is missing: apt-get install -y busybox-static"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let image = dir.path().join("image");
        build_busybox_httpd_image(&image);
        let n = std::process::id() ^ nanos();
        let cfg = BaselineConfig {
            work_dir: dir.path().join("work"),
            runc: PathBuf::from("runc"),
            name_prefix: format!("tb{:04x}", n & 0xffff),
            // 172.31.160.0/20 .. 172.31.255.0: one /24 per run, far from the bench default's
            // first blocks and from the dev cluster's 172.30.0.0/16.
            subnet: format!("172.31.{}.0/24", 160 + (n % 96)),
            cpus: 1,
            memory_mb: 64,
        };
        Self {
            cfg,
            reference: format!("oci:{}", image.display()),
            _dir: dir,
        }
    }

    async fn open(&self) -> BareRunc {
        BareRunc::open(self.cfg.clone(), &self.reference)
            .await
            .expect("open the baseline")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Opening again destroys everything under the prefix (what a killed run left too).
        let cfg = self.cfg.clone();
        let reference = self.reference.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async {
                let _ = BareRunc::open(cfg, &reference).await;
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bare_runc_serves_http_and_is_destroyed() {
    let fixture = Fixture::new();
    let mut bare = fixture.open().await;
    let prepared = bare.prepare().await.expect("prepare");
    let bundle = bare.bundle_dir(&prepared.id);
    let config = std::fs::read_to_string(bundle.join("config.json")).expect("config.json");
    assert!(
        config.contains(&format!("{}-{}", fixture.cfg.name_prefix, prepared.id)),
        "config.json does not name the netns: {config}"
    );
    bare.run(&prepared.id).await.expect("runc run");
    assert!(
        runc_ids(&fixture.cfg.work_dir)
            .contains(&format!("{}-{}", fixture.cfg.name_prefix, prepared.id)),
        "runc does not list the container"
    );
    wait_for_200((prepared.guest_ip, 8080).into(), Duration::from_secs(20))
        .await
        .expect("the container answers 200");

    assert_eq!(bare.destroy_all().await.expect("destroy"), 1);
    assert!(!bundle.exists(), "bundle {} is left", bundle.display());
    assert!(runc_ids(&fixture.cfg.work_dir).is_empty());
    let netns =
        Path::new("/var/run/netns").join(format!("{}-{}", fixture.cfg.name_prefix, prepared.id));
    assert!(!netns.exists(), "netns {} is left", netns.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn reopening_destroys_what_a_killed_run_left() {
    let fixture = Fixture::new();
    let mut bare = fixture.open().await;
    let prepared = bare.prepare().await.expect("prepare");
    bare.run(&prepared.id).await.expect("runc run");
    let bundle = bare.bundle_dir(&prepared.id);
    drop(bare); // as if the benchmark was killed here

    let bare = fixture.open().await;
    assert!(!bundle.exists(), "bundle {} is left", bundle.display());
    assert!(runc_ids(&fixture.cfg.work_dir).is_empty());
    assert_eq!(bare.destroy_all().await.expect("destroy"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_runc_run_reports_runc_output() {
    let fixture = Fixture::new();
    let mut bare = fixture.open().await;
    let prepared = bare.prepare().await.expect("prepare");
    bare.run(&prepared.id).await.expect("first run");
    // The same container id again: runc refuses, and says why.
    let err = bare.run(&prepared.id).await.unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
}

/// An OCI layout with busybox at `/busybox` whose entrypoint serves `/www` on port 8080.
fn build_busybox_httpd_image(out: &Path) {
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox");
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(busybox.len() as u64);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    layer
        .append_data(&mut header, "busybox", busybox.as_slice())
        .expect("tar");
    let layer = layer.into_inner().expect("tar");
    let config = godwit_image::ImageConfig {
        entrypoint: vec!["/busybox".into(), "sh".into(), "-c".into()],
        cmd: vec![
            "/busybox mkdir -p /www && echo ok > /www/index.html && \
             exec /busybox httpd -f -p 8080 -h /www"
                .into(),
        ],
        ..Default::default()
    };
    godwit_image::build_from_layers(&[layer], &config, out, "latest").expect("build image");
}

fn runc_ids(work_dir: &Path) -> Vec<String> {
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(work_dir.join("runc"))
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}
