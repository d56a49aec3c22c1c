//! Profiles and `store run` (issue 18): the commented example `docs/examples/store.toml` is
//! loaded and run (its paths moved into a scratch directory): snapshot, forget, prune, check and
//! hooks; a failing dump and a failing `before` hook commit nothing and run `on_error`; a file
//! with an unknown key or a missing path is refused with its line before anything runs.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::support::{write, Env, Run};

/// The example configuration with every absolute path moved below `root`.
fn example_in(root: &Path) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/store.toml"),
    )
    .unwrap();
    let r = root.display();
    text.replace("\"/", &format!("\"{r}/"))
        .replace(">> /var", &format!(">> {r}/var"))
        .replace("test -d /alf", &format!("test -d {r}/alf"))
}

struct Job {
    env: Env,
    config: PathBuf,
    bin: PathBuf,
}

impl Job {
    fn new() -> Self {
        let env = Env::new();
        let root = env.dir.path().to_path_buf();
        write(&root.join("alf_data/solr4Backup/snapshot/segments_1"), b"solr backup");
        write(&root.join("alf_data/contentstore/2026/11/21/a.bin"), b"document");
        write(&root.join("alf_data/contentstore.deleted/old.bin"), b"deleted");
        for d in ["var/log/store", "var/lib/node_exporter/textfile_collector"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let bin = root.join("bin");
        write(&bin.join("pg_dump"), b"#!/bin/sh\necho PGDMP stand-in dump\n");
        std::fs::set_permissions(
            bin.join("pg_dump"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let config = root.join("store.toml");
        write(&config, example_in(&root).as_bytes());
        let repo = root.join("backup/alfresco");
        crate::support::store([OsStr::new("--repo"), repo.as_os_str(), OsStr::new("init")]).ok();
        Job { env, config, bin }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.env.dir.path().join(rel)
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, true)
    }

    /// `store run ARGS`; without the suite's password in the environment unless `password`.
    fn run_with(&self, args: &[&str], password: bool) -> Run {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = std::process::Command::new(crate::support::bin());
        if !password {
            cmd.env_remove("STORE_PASSWORD");
        }
        let out = cmd
            .arg("run")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("PATH", path)
            .env_remove("STORE_REPO")
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn sets(&self) -> usize {
        std::fs::read_dir(self.path("backup/alfresco/snapshots")).unwrap().count()
    }

    fn outcomes(&self) -> String {
        std::fs::read_to_string(self.path("var/log/store/outcomes")).unwrap_or_default()
    }

    fn set_config(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }
}

// See: issue 18 ("`store run PROFILE`: snapshot, then forget and prune per the policy, then the
// configured check; one exit code for the whole"; "`docs/examples/store.toml` is a complete,
// commented example that the tests load").
#[test]
fn the_example_profile_runs_snapshot_forget_prune_check_and_hooks() {
    let job = Job::new();
    let dry = job.run(&["alfresco", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains("step snapshot: store --repo") && dry.stdout.contains("step check:"),
        "{}",
        dry.stdout
    );
    assert_eq!(job.sets(), 0, "a dry run commits nothing");
    assert_eq!(job.outcomes(), "", "a dry run runs no hook");
    // The content store is write-once: the flag follows its component.
    let content = dry.stdout.find("contentstore --write-once");
    assert!(content.is_some(), "{}", dry.stdout);

    let run = job.run(&["alfresco"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(job.sets(), 1);
    assert_eq!(job.outcomes(), "store: alfresco: success\n");
    // The components in the order of the profile, with its tag.
    let repo = job.path("backup/alfresco");
    let snaps = crate::support::store([
        OsStr::new("--repo"),
        repo.as_os_str(),
        OsStr::new("snapshots"),
        OsStr::new("--json"),
    ])
    .ok()
    .json();
    let set = &snaps[0];
    let names: Vec<&str> =
        set["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["index", "db", "content", "deleted"]);
    assert_eq!(set["tags"][0], "nightly");
    // Each step in the log, the whole job in the metrics.
    let log = std::fs::read_to_string(job.path("var/log/store/alfresco.log")).unwrap();
    for step in [
        "step snapshot: exit 0",
        "step forget: exit 0",
        "step prune: exit 0",
        "step check: exit 0",
        "hook after",
    ] {
        assert!(log.contains(step), "{step:?} not in:\n{log}");
    }
    let prom = std::fs::read_to_string(
        job.path("var/lib/node_exporter/textfile_collector/store-alfresco.prom"),
    )
    .unwrap();
    assert!(prom.contains("store_last_exit_code{command=\"run\",profile=\"alfresco\""), "{prom}");
    assert!(prom.contains("store_snapshot_files{"), "{prom}");

    // With --json: one document, each step's own JSON result in it (and in the log).
    let run = job.run(&["alfresco", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    assert_eq!((doc["outcome"].as_str(), doc["exit_code"].as_u64()), (Some("success"), Some(0)));
    let steps: Vec<&str> =
        doc["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["snapshot", "forget", "prune", "check"]);
    assert_eq!(doc["steps"][0]["result"]["files"], 4, "{doc}");
    assert_eq!(doc["steps"][0]["result"]["kind"], "incremental", "{doc}");
    let log = std::fs::read_to_string(job.path("var/log/store/alfresco.log")).unwrap();
    assert!(log.contains("step snapshot: json {"), "{log}");
    assert_eq!(job.sets(), 2);

    // A dump that fails: nothing committed, on_error told where and how.
    write(&job.bin.join("pg_dump"), b"#!/bin/sh\necho 'pg_dump: connection refused' >&2\nexit 1\n");
    let run = job.run(&["alfresco"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(job.sets(), 2);
    assert!(
        job.outcomes().ends_with("store: alfresco failed at snapshot (exit 1)\n"),
        "{}",
        job.outcomes()
    );

    // A before hook that fails: nothing runs, nothing committed.
    write(&job.bin.join("pg_dump"), b"#!/bin/sh\necho PGDMP dump\n");
    let text = std::fs::read_to_string(&job.config).unwrap();
    job.set_config(&text.replacen("before = \"test -d", "before = \"false && test -d", 1));
    let run = job.run(&["alfresco"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("the before hook exited 1; nothing was run"), "{}", run.stderr);
    assert_eq!(job.sets(), 2);
    assert!(job.outcomes().ends_with("failed at before (exit 1)\n"), "{}", job.outcomes());
}

// See: issue 18 ("A profile that names an unknown key or a missing path is refused with the line
// number, before anything runs").
#[test]
fn a_profile_with_an_unknown_key_or_a_missing_path_is_refused_with_its_line() {
    let job = Job::new();
    let good = std::fs::read_to_string(&job.config).unwrap();
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;

    let typo = good.replacen("keep_weekly = 4", "keep_wekly = 4", 1);
    job.set_config(&typo);
    let run = job.run(&["alfresco"]);
    assert_eq!(run.code, 1);
    let line = line_of(&typo, "keep_wekly");
    assert!(
        run.stderr.contains(&format!("line {line}")) && run.stderr.contains("keep_wekly"),
        "{}",
        run.stderr
    );

    let missing = good.replacen("contentstore\"", "contentstor\"", 1);
    job.set_config(&missing);
    let run = job.run(&["alfresco"]);
    assert_eq!(run.code, 1);
    let line = line_of(&missing, "contentstor\"");
    assert!(
        run.stderr.contains(&format!("line {line}"))
            && run.stderr.contains("contentstor does not exist"),
        "{}",
        run.stderr
    );

    job.set_config(&good);
    let run = job.run(&["alfresco-nightly"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no profile \"alfresco-nightly\" (it has: alfresco, alfresco-cold)"),
        "{}",
        run.stderr
    );
    assert_eq!(job.sets(), 0, "nothing ran");
    assert_eq!(job.outcomes(), "");
}

// See: issue 20 ("a nightly run covers the whole repository within a month"; append-only files).
#[test]
fn a_profile_check_reads_the_packs_due_and_max_age_needs_read_data() {
    let job = Job::new();
    let good = std::fs::read_to_string(&job.config).unwrap();
    let subset = "read_data_subset = \"auto/7\"\n";
    assert!(good.contains(subset));
    job.set_config(&good.replacen(subset, "max_age = \"30d\"\n", 1));
    let run = job.run(&["alfresco"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("profile alfresco: check.max_age needs read_data = true"),
        "{}",
        run.stderr
    );
    job.set_config(&good.replacen(subset, "read_data = true\nmax_bytes = \"2 parsecs\"\n", 1));
    let run = job.run(&["alfresco"]);
    assert!(run.code == 1 && run.stderr.contains("check.max_bytes"), "{}", run.stderr);
    assert_eq!(job.sets(), 0, "nothing ran");

    let due = "read_data = true\nmax_age = \"30d\"\nmax_bytes = \"1\"\n";
    let exclude = "exclude = [\"*.tmp\"]";
    let config = good.replacen(subset, due, 1).replacen(
        exclude,
        &format!("{exclude}\nappend_only = [\"Journal*\"]"),
        1,
    );
    job.set_config(&config);
    let dry = job.run(&["alfresco", "--dry-run"]);
    assert!(dry.stdout.contains("check --read-data --max-age 30d --max-bytes 1"), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("--append-only 'Journal*'")
            || dry.stdout.contains("--append-only Journal*"),
        "{}",
        dry.stdout
    );
    let run = job.run(&["alfresco"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // The one set's packs were read by the check (one, the bound) and recorded.
    assert_eq!(std::fs::read_dir(job.path("backup/alfresco/verified")).unwrap().count(), 1);
}

// See: issue 15 ("password source in profiles").
#[test]
fn a_profile_gives_the_password_by_file_or_by_command_and_run_takes_a_metrics_file() {
    let job = Job::new();
    let root = job.env.dir.path().to_path_buf();
    let pw = root.join("etc/store/alfresco.pw");
    write(&pw, format!("{}\n", crate::support::PASSWORD).as_bytes());
    let example = example_in(&root);
    // Without a password the job fails at its first step, naming the ways to give one.
    let run = job.run_with(&["alfresco"], false);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("STORE_PASSWORD_COMMAND"), "{}", run.stderr);
    let by_command = example.replace(
        "# password_command = \"vault kv get -field=pw secret/store\"",
        &format!("password_command = \"cat {}\"", pw.display()),
    );
    for (how, text) in [
        ("file", example.replace("# password_file = ", "password_file = ")),
        ("command", by_command),
    ] {
        assert_ne!(text, example, "{how}: the example names the key");
        write(&job.config, text.as_bytes());
        let before = job.sets();
        let run = job.run_with(&["alfresco"], false);
        assert_eq!(run.code, 0, "{how}: {}{}", run.stdout, run.stderr);
        assert_eq!(job.sets(), before + 1, "{how}");
    }
    // `--metrics-file` puts the job's metrics elsewhere for one run (issue 18).
    let other = job.path("elsewhere.prom");
    let run = job.run_with(&["alfresco", "--metrics-file", other.to_str().unwrap()], false);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let prom = std::fs::read_to_string(&other).unwrap();
    assert!(prom.contains("store_last_exit_code{command=\"run\",profile=\"alfresco\""), "{prom}");
    assert!(prom.contains("store_snapshot_files{"), "{prom}");
    // Both at once is refused before anything runs.
    let both = example
        .replace("# password_file = ", "password_file = ")
        .replace("# password_command = ", "password_command = ");
    write(&job.config, both.as_bytes());
    let run = job.run_with(&["alfresco"], false);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("one of password_file and password_command"), "{}", run.stderr);
}

// See: issue 20 ("`snapshot --verify alfresco` runs it right after the set is committed"), in
// profiles as `verify = "alfresco"`.
#[test]
fn a_profile_that_verifies_runs_verify_alfresco_on_each_set_and_exits_3_when_documents_are_missing()
{
    let job = Job::new();
    let root = job.env.dir.path().to_path_buf();
    let example = example_in(&root);
    let verifying = example.replace("# verify = \"alfresco\"", "verify = \"alfresco\"");
    assert_ne!(verifying, example, "the example names the key");
    job.set_config(&verifying);
    // A stand-in `pg_restore` printing the rows this test puts in `rows`.
    let rows = job.path("rows");
    let script = format!(
        "#!/bin/sh\ncat > /dev/null\n\
         echo 'COPY public.alf_content_url (id, content_url, content_size) FROM stdin;'\n\
         cat '{}'\nprintf '\\\\.\\n'\n",
        rows.display()
    );
    write(&job.bin.join("pg_restore"), script.as_bytes());
    std::fs::set_permissions(
        job.bin.join("pg_restore"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    write(&rows, b"1\tstore://2026/11/21/a.bin\t8\n");
    let run = job.run(&["alfresco"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("1 content URLs, 1 found with their size"), "{}", run.stdout);
    // A document the database references is not in the content store: named, exit 3, and the
    // set stays committed.
    write(&rows, b"1\tstore://2026/11/21/a.bin\t8\n2\tstore://2026/11/21/gone.bin\t5\n");
    let before = job.sets();
    let run = job.run(&["alfresco"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("missing: store://2026/11/21/gone.bin"), "{}", run.stdout);
    assert_eq!(job.sets(), before + 1);
    // Anything but a kind `store` knows is refused with its line, before anything runs.
    job.set_config(&verifying.replace("verify = \"alfresco\"", "verify = \"oracle\""));
    let run = job.run(&["alfresco"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("line") && run.stderr.contains("oracle"), "{}", run.stderr);
    assert_eq!(job.sets(), before + 1);
}
