//! A set with a real PostgreSQL dump (the Alfresco database): a throwaway cluster is started,
//! loaded, dumped with `pg_dump -Fc` as a command component beside two directory components,
//! restored, and the restored dump is loaded into a fresh database with identical contents.
//! `.ci/setup` installs PostgreSQL; this test fails (it does not skip) when it is missing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{random_bytes, write, Env};

/// The newest PostgreSQL server installation.
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries not found in /usr/lib/postgresql: run `bash .ci/setup`")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL server version installed: run `bash .ci/setup`")
}

/// A running throwaway cluster, listening only on a Unix socket; stopped on drop.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    as_root: bool,
}

impl Cluster {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_root {
            // The server refuses to run as root: run the server tools as `postgres`.
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn start(dir: &Path) -> Self {
        let as_root = rustix::process::geteuid().is_root();
        let data = dir.join("pgdata");
        let sock = dir.join("sock");
        std::fs::create_dir_all(&sock).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        if as_root {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .arg(&sock)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let cluster = Cluster { bin: pg_bin(), data, sock, as_root };
        let out = cluster
            .command("initdb")
            .args(["-U", "postgres", "--auth=trust", "-D"])
            .arg(&cluster.data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let opts = format!("-c listen_addresses='' -k {}", cluster.sock.display());
        let out = cluster
            .command("pg_ctl")
            .args(["-w", "-D"])
            .arg(&cluster.data)
            .args(["-o", &opts, "-l"])
            .arg(cluster.data.join("log"))
            .arg("start")
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
        cluster
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
            .arg(&self.sock)
            .args(["-d", db, "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-w", "-m", "fast", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

const CHECKSUM: &str = "SELECT count(*) || ':' || md5(string_agg(id || '/' || uuid || '/' || props::text, ',' ORDER BY id)) FROM alf_node";

#[test]
fn alfresco_set_with_a_real_pg_dump_restores_into_an_identical_database() {
    let env = Env::new();
    env.init();
    let pg_dir = env.path("pg");
    let cluster = Cluster::start(&pg_dir);
    cluster.psql("postgres", "CREATE DATABASE alfresco");
    cluster.psql(
        "alfresco",
        "CREATE TABLE alf_node (id bigint PRIMARY KEY, uuid text NOT NULL, props jsonb);
         INSERT INTO alf_node
           SELECT g, md5(g::text), jsonb_build_object('name', 'doc-' || g, 'size', g * 37 % 100000)
           FROM generate_series(1, 50000) g;",
    );
    let expected = cluster.psql("alfresco", CHECKSUM);
    assert!(expected.starts_with("50000:"), "{expected}");

    let solr = env.path("alf_data/solr4Backup");
    let content = env.path("alf_data/contentstore");
    write(&solr.join("alfresco/snapshot.20261121/segments_9"), &random_bytes(1, 20_000));
    write(&content.join("2026/11/21/2/0/0b9f.bin"), &random_bytes(2, 200_000));
    let dump = format!("db=pg_dump -Fc -U postgres -h {} alfresco", cluster.sock.display());
    let doc = env
        .run(
            "snapshot",
            &[
                OsStr::new("--json"),
                OsStr::new("--component"),
                OsStr::new(&format!("index={}", solr.display())),
                OsStr::new("--component-cmd"),
                OsStr::new(&dump),
                OsStr::new("--component"),
                OsStr::new(&format!("content={}", content.display())),
            ],
        )
        .ok()
        .json();
    let names: Vec<&str> =
        doc["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["index", "db", "content"]);
    assert!(doc["components"][1]["bytes_read"].as_u64().unwrap() > 100_000);

    let out = env.path("restore");
    env.restore("latest", &out);
    crate::support::assert_same_tree(&solr, &out.join("index"));
    crate::support::assert_same_tree(&content, &out.join("content"));
    cluster.psql("postgres", "CREATE DATABASE restored");
    let loaded = Command::new(cluster.bin.join("pg_restore"))
        .args(["-U", "postgres", "-h"])
        .arg(&cluster.sock)
        .args(["-d", "restored"])
        .arg(out.join("db"))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "pg_restore: {}", String::from_utf8_lossy(&loaded.stderr));
    assert_eq!(cluster.psql("restored", CHECKSUM), expected);
}
