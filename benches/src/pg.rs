//! A throwaway PostgreSQL cluster for the benchmarks and the tests: `initdb` and `pg_ctl` of
//! the newest server installed, listening only on a Unix socket, stopped on drop. The server
//! refuses to run as root, so as root its tools run as `postgres` (`runuser`).
//!
//! A cluster that cannot start is the caller's failure: these helpers panic with the reason.
#![allow(clippy::expect_used, reason = "test and benchmark helper: a failure is the caller's")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running cluster.
pub struct Cluster {
    /// The server's `bin` directory (`pg_ctl`, `psql`, `pg_dump`, `pg_restore`).
    pub bin: PathBuf,
    data: PathBuf,
    /// The directory of its Unix socket (`-h` of the clients).
    pub sock: PathBuf,
    as_root: bool,
}

/// The newest PostgreSQL server installation's `bin` directory.
fn newest_server() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries not found in /usr/lib/postgresql: run `bash .ci/setup`")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL server version installed: run `bash .ci/setup`")
}

impl Cluster {
    /// Creates and starts a cluster below `dir` (made traversable for `postgres` as root).
    #[must_use]
    pub fn start(dir: &Path) -> Self {
        let as_root =
            Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let (data, sock) = (dir.join("pgdata"), dir.join("sock"));
        std::fs::create_dir_all(&data).expect("create the data directory");
        std::fs::create_dir_all(&sock).expect("create the socket directory");
        let cluster = Cluster { bin: newest_server(), data, sock, as_root };
        if as_root {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .expect("open the cluster's directory to postgres");
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&cluster.data)
                .arg(&cluster.sock)
                .status()
                .expect("run chown");
            assert!(chown.success(), "chown to postgres failed");
        }
        let out = cluster
            .server("initdb")
            .args(["-U", "postgres", "--auth=trust", "-D"])
            .arg(&cluster.data)
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let opts = format!("-c listen_addresses='' -k {}", cluster.sock.display());
        let out = cluster
            .server("pg_ctl")
            .args(["-w", "-D"])
            .arg(&cluster.data)
            .args(["-o", &opts, "-l"])
            .arg(cluster.data.join("log"))
            .arg("start")
            .output()
            .expect("run pg_ctl");
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
        cluster
    }

    /// A server tool (`initdb`, `pg_ctl`), as `postgres` when running as root.
    #[must_use]
    pub fn server(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Runs `sql` in database `db`; returns what it printed (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
            .arg(&self.sock)
            .args(["-d", db, "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `pg_dump` of database `db` as plain SQL into `file`.
    pub fn dump(&self, db: &str, file: &Path) {
        let out = Command::new(self.bin.join("pg_dump"))
            .args(["-U", "postgres", "-h"])
            .arg(&self.sock)
            .args(["-d", db, "-f"])
            .arg(file)
            .output()
            .expect("run pg_dump");
        assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .server("pg_ctl")
            .args(["-w", "-m", "fast", "-D"])
            .arg(&self.data)
            .arg("stop")
            .stdout(Stdio::null())
            .status();
    }
}
