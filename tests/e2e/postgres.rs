//! A set with a real PostgreSQL dump (the Alfresco database): a throwaway cluster is started,
//! loaded, dumped with `pg_dump -Fc` as a command component beside two directory components,
//! restored, and the restored dump is loaded into a fresh database with identical contents.
//! `.ci/setup` installs PostgreSQL; this test fails (it does not skip) when it is missing.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use store_benches::pg::Cluster;

use crate::support::{random_bytes, write, Env};

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

/// `store snapshot FLAGS...` of an Alfresco-shaped set: the database dumped by `dump` (a
/// `pg_dump` command line) and the content store at `content`.
fn alfresco_snapshot(env: &Env, flags: &[&str], dump: &str, content: &Path) -> crate::support::Run {
    let mut args: Vec<std::ffi::OsString> = flags.iter().map(Into::into).collect();
    args.push("--component-cmd".into());
    args.push(format!("db={dump}").into());
    args.push("--component".into());
    args.push(format!("content={}", content.display()).into());
    env.run("snapshot", &args)
}

/// [`alfresco_snapshot`], then `verify alfresco` of that set.
fn snapshot_and_verify(env: &Env, dump: &str, content: &Path) -> crate::support::Run {
    alfresco_snapshot(env, &[], dump, content).ok();
    env.run("verify", &["alfresco", "latest", "--json"])
}

// See: issue 20 ("consistent set passes; one file deleted, one truncated: both named").
#[test]
fn verify_alfresco_finds_every_content_url_and_names_the_missing_and_the_truncated() {
    let env = Env::new();
    env.init();
    let cluster = Cluster::start(&env.path("pg"));
    cluster.psql("postgres", "CREATE DATABASE alfresco");
    cluster.psql(
        "alfresco",
        "CREATE TABLE alf_content_url (id bigint PRIMARY KEY, version bigint NOT NULL,
           content_url varchar(255) NOT NULL UNIQUE, content_url_short varchar(12) NOT NULL,
           content_url_crc bigint NOT NULL, content_size bigint NOT NULL, orphan_time bigint,
           content_url_key_id bigint)",
    );
    // 300 documents in per-minute directories, as Alfresco writes them, and two orphans.
    let content = env.path("alf_data/contentstore");
    let mut rows = Vec::new();
    for i in 0..300u64 {
        let rel = format!("2026/11/21/{}/{}/{:08x}-6c1e-4d2b-9f3a-{i:012x}.bin", i / 60, i % 60, i);
        let size = 1 + (i * 7919) % 20_000;
        write(&content.join(&rel), &random_bytes(i, size as usize));
        rows.push(format!("({i}, 0, 'store://{rel}', 'x', {i}, {size}, NULL, NULL)"));
    }
    write(&content.join("2026/11/21/4/59/orphan-1.bin"), b"no row references this");
    write(&content.join("2026/11/22/0/0/orphan-2.bin"), b"nor this");
    rows.push("(1000, 0, 's3://other-store/x.bin', 'x', 0, 10, NULL, NULL)".to_owned());
    cluster.psql("alfresco", &format!("INSERT INTO alf_content_url VALUES {}", rows.join(",")));

    let sock = cluster.sock.display().to_string();
    let custom = format!("pg_dump -Fc -U postgres -h {sock} alfresco");
    let run = snapshot_and_verify(&env, &custom, &content);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["consistent"], true);
    assert_eq!(doc["urls"], 301);
    assert_eq!(doc["ok"], 300);
    assert_eq!(doc["other_stores"], 1);
    assert_eq!(doc["content_files"], 302);
    assert_eq!(doc["unreferenced"], 2);
    // `snapshot --verify alfresco` checks the set it has just committed.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let verified = alfresco_snapshot(&env, &["--verify", "alfresco"], &custom, &content);
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);
    assert!(verified.stdout.contains("the set is consistent"), "{}", verified.stdout);

    // One document deleted, one truncated: both named, exit 1; the same from a plain dump.
    let gone = "2026/11/21/1/7/00000043-6c1e-4d2b-9f3a-000000000043.bin";
    let cut = "2026/11/21/4/2/000000f2-6c1e-4d2b-9f3a-0000000000f2.bin";
    std::fs::remove_file(content.join(gone)).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(content.join(cut)).unwrap();
    f.set_len(10).unwrap();
    drop(f);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let plain = format!("pg_dump -U postgres -h {sock} alfresco");
    for dump in [&custom, &plain] {
        let run = snapshot_and_verify(&env, dump, &content);
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        let doc = run.json();
        assert_eq!(doc["consistent"], false);
        assert_eq!(doc["missing_count"], 1);
        assert_eq!(doc["missing"][0]["url"], format!("store://{gone}"));
        assert_eq!(doc["wrong_size_count"], 1);
        assert_eq!(doc["wrong_size"][0]["url"], format!("store://{cut}"));
        assert_eq!(doc["wrong_size"][0]["found_size"], 10);
        assert_eq!(doc["ok"], 298);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // Checked by the snapshot itself: the set stays committed, and the exit status is 3.
    let sets = std::fs::read_dir(env.repo().join("snapshots")).unwrap().count();
    let run = alfresco_snapshot(&env, &["--verify", "alfresco", "--json"], &plain, &content);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.json()["verify"]["missing"][0]["url"], format!("store://{gone}"));
    assert!(run.stderr.contains("not restorable as a whole"), "{}", run.stderr);
    assert_eq!(std::fs::read_dir(env.repo().join("snapshots")).unwrap().count(), sets + 1);
    // Without the components it needs, nothing is read or committed.
    let run =
        env.run("snapshot", &[OsStr::new("--verify"), OsStr::new("alfresco"), content.as_os_str()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("needs a component named \"db\""), "{}", run.stderr);
    assert_eq!(std::fs::read_dir(env.repo().join("snapshots")).unwrap().count(), sets + 1);

    // As text, each is named on a line of its own.
    let text = env.run("verify", &["alfresco", "latest"]);
    assert_eq!(text.code, 1);
    assert!(text.stdout.contains(&format!("missing: store://{gone}")), "{}", text.stdout);
    assert!(text.stdout.contains(&format!("wrong size: store://{cut}")), "{}", text.stdout);

    // A set without the components, or whose db component is no Alfresco dump, is refused
    // with the reason.
    let run = env.run("verify", &["alfresco", "latest", "--content", "contentstore"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no component \"contentstore\" (it has: db, content)"),
        "{}",
        run.stderr
    );
    let run = env.run("verify", &["alfresco", "latest", "--db", "content"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("directory, not a pg_dump"), "{}", run.stderr);
}
