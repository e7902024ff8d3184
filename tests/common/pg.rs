//! A throwaway PostgreSQL 15 cluster for a test: `initdb` into a temporary directory,
//! `pg_ctl start` on a free loopback port with its unix socket in that directory, and
//! `pg_ctl stop` when dropped (a panicking test included). initdb refuses to run as root, so
//! as root the cluster belongs to the system user `cartero-pg`, created when missing.
//! If PostgreSQL cannot be started, the test fails with one line saying why.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Where Debian's `postgresql-15` puts its programs (`scripts/test.sh` installs it).
/// Where Debian puts each installed PostgreSQL version's programs.
const VERSIONS: &str = "/usr/lib/postgresql";

/// The programs of the newest PostgreSQL installed, if any.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(VERSIONS)
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}
const OWNER: &str = "cartero-pg";

pub struct Cluster {
    dir: tempfile::TempDir,
    pub port: u16,
    as_root: bool,
}

fn fail(what: &str, out: &Output) -> ! {
    panic!(
        "PostgreSQL cannot be started for this test: {what} failed: {}{}",
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )
}

impl Cluster {
    pub fn start() -> Cluster {
        assert!(
            bin_dir().is_some(),
            "PostgreSQL cannot be started for this test: no {VERSIONS}/<version>/bin/initdb (install the Debian \
             package postgresql, as scripts/test.sh does)"
        );
        let as_root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let dir = tempfile::Builder::new().prefix("cartero-pg-").tempdir().expect("a temporary directory");
        if as_root {
            // One test at a time checks and creates the user (concurrent useradds trip over
            // each other's lock on /etc/passwd).
            static USER: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _one = USER.lock().unwrap_or_else(|p| p.into_inner());
            let exists = Command::new("id").arg("-u").arg(OWNER).output().is_ok_and(|o| o.status.success());
            if !exists {
                let out = Command::new("useradd")
                    .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OWNER])
                    .output()
                    .expect("useradd runs");
                if !out.status.success() {
                    fail(&format!("useradd {OWNER}"), &out);
                }
            }
            let out = Command::new("chown").arg(OWNER).arg(dir.path()).output().expect("chown runs");
            if !out.status.success() {
                fail("chown", &out);
            }
        }
        // A free port, as the kernel picks it (released just before PostgreSQL takes it).
        let port = TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()).expect("a free port").port();
        let cluster = Cluster { dir, port, as_root };
        let data = cluster.data();
        let out = cluster.run("initdb", &["-D", &data, "-U", "postgres", "-A", "trust", "-N", "-E", "UTF8"]);
        if !out.status.success() {
            fail("initdb", &out);
        }
        cluster.pg_ctl_start();
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let program = bin_dir().expect("PostgreSQL's programs, checked at start").join(program);
        let mut command = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", OWNER, "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command.args(args).current_dir(self.dir.path()).output().expect("PostgreSQL's programs run")
    }

    /// Starts (or restarts) the server.
    pub fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=40",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let out = self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-w", "-t", "60", "-o", &options, "start"]);
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
            panic!(
                "PostgreSQL cannot be started for this test: pg_ctl start failed: {}; log: {}",
                String::from_utf8_lossy(&out.stdout).trim(),
                log.trim()
            );
        }
    }

    /// Stops the server at once (connections are cut), as a crash or an outage would.
    pub fn pg_ctl_stop(&self) {
        let _ = self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    /// The address `cartero serve --store` takes.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.pg_ctl_stop();
    }
}
