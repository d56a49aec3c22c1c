//! The guides in `docs/guides/` are executable: every ```sh block of a guide runs, in order, as
//! one bash script (`set -euo pipefail`) against generated data in a sandbox, with the paths
//! of the guide moved into the sandbox and stand-ins for `pg_dump` and `pg_restore`.

use std::path::Path;
use std::process::Command;

use crate::support::{random_bytes, write, Env};

/// The ```sh blocks of a Markdown file.
fn sh_blocks(markdown: &str) -> Vec<String> {
    fenced_blocks(markdown, "sh")
}

/// The fenced blocks of `lang` of a Markdown file.
fn fenced_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l == fence => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Replaces absolute paths starting with one of `roots` (where a path can start: line start,
/// space, `=`, quote) by the same path below `sandbox`.
fn into_sandbox(text: &str, roots: &[&str], sandbox: &Path) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        let at_path_start =
            out.chars().last().is_none_or(|c| matches!(c, ' ' | '=' | '\'' | '"' | '\n'));
        if at_path_start {
            for root in roots {
                if rest.starts_with(root) {
                    out.push_str(&sandbox.display().to_string());
                    out.push_str(root);
                    rest = &rest[root.len()..];
                    continue 'scan;
                }
            }
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn run_guide(guide: &str, roots: &[&str], env: &Env) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/guides").join(guide),
    )
    .unwrap();
    let blocks = sh_blocks(&text);
    assert!(blocks.len() >= 5, "{guide} has only {} sh blocks", blocks.len());
    let sandbox = env.dir.path();
    let bin = sandbox.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(crate::support::bin(), bin.join("store")).unwrap();
    // The stand-in dump holds the `alf_content_url` rows of the sandbox's content store (as
    // Alfresco's database would), which the stand-in `pg_restore --table` prints.
    let dump = format!(
        "#!/bin/sh\nprintf 'PGDMP stand-in dump: %s\\n' \"$*\"\n\
         echo 'COPY public.alf_content_url (id, content_url, content_size) FROM stdin;'\n\
         cd '{}/alf_data/contentstore' 2>/dev/null && find . -type f -printf '%P\\t%s\\n' | sort \
         | awk -F '\\t' '{{print NR \"\\tstore://\" $1 \"\\t\" $2}}'\n\
         printf '\\\\.\\n'\nseq 1 5000\n",
        sandbox.display()
    );
    write(&bin.join("pg_dump"), dump.as_bytes());
    write(
        &bin.join("pg_restore"),
        b"#!/bin/sh\ncase \"$*\" in *--table=alf_content_url*) tail -n +2; exit 0;; esac\n\
          for last; do :; done\nhead -c 5 \"$last\" | grep -q PGDMP\n",
    );
    for tool in ["pg_dump", "pg_restore"] {
        std::fs::set_permissions(
            bin.join(tool),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    let script = format!("set -euo pipefail\n{}", into_sandbox(&blocks.join("\n"), roots, sandbox));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .env_remove("STORE_REPO")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{guide} failed ({:?})\nscript:\n{script}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn alfresco_guide_runs_as_written() {
    let env = Env::new();
    let alf = env.path("alf_data");
    write(&alf.join("solr4Backup/alfresco/snapshot.20261121/segments_4"), &random_bytes(1, 30_000));
    write(&alf.join("solr4/index/segments_5"), b"live index");
    for i in 0..40u64 {
        let data = if i % 3 == 0 {
            random_bytes(i, 50_000)
        } else {
            format!("version {i} ").repeat(3000).into_bytes()
        };
        write(&alf.join(format!("contentstore/2026/11/21/{}/{i:04x}.bin", i % 5)), &data);
    }
    write(&alf.join("contentstore.deleted/2026/11/20/0/dead.bin"), b"deleted document");
    let stdout = run_guide(
        "alfresco.md",
        &["/alf_data", "/backup/", "/restore", "/usr/local/bin", "/var/", "/etc/store"],
        &env,
    );
    assert!(stdout.contains("content store matches"), "{stdout}");
    // `store verify alfresco latest` found every document of the stand-in database.
    assert!(stdout.contains("40 content URLs, 40 found with their size, 0 missing"), "{stdout}");
    let restored = env.path("restore");
    for component in ["content", "db", "deleted"] {
        assert!(restored.join(component).exists(), "{component} not restored");
    }
    crate::support::assert_same_tree(&alf.join("contentstore"), &restored.join("content"));
}

#[test]
fn marklogic_guide_runs_as_written() {
    let env = Env::new();
    let backups = env.path("space/backups/Documents");
    let forests = env.path("var/opt/MarkLogic/Forests");
    for root in [&backups.join("20261121-1/Forests"), &forests] {
        write(&root.join("Documents/Label"), b"label");
        write(&root.join("Documents/00000a1b/TreeData"), &random_bytes(7, 3 << 20));
        write(&root.join("Documents/00000a1b/ListData"), &random_bytes(8, 1 << 20));
        write(&root.join("Documents/Journals/Journal-20261121"), &random_bytes(9, 200_000));
    }
    write(&backups.join("20261121-1/BackupTag.txt"), b"tag");
    let stdout = run_guide(
        "marklogic.md",
        &["/space/", "/var/opt/MarkLogic", "/backup/", "/etc/store"],
        &env,
    );
    assert!(stdout.contains("backup directory matches"), "{stdout}");
    assert!(stdout.contains("incremental"), "{stdout}");
    // The second cold set, with the journals append-only: nothing grew, nothing was read.
    assert!(stdout.contains("read 0 bytes"), "{stdout}");
}

fn alfresco_guide() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/guides/alfresco.md"),
    )
    .unwrap()
}

// See: issue 17 ("the Alfresco guide's cron wrapper exits 0 when the backup fails").
#[test]
fn the_nightly_wrapper_of_the_alfresco_guide_fails_when_the_dump_fails() {
    let text = alfresco_guide();
    let script: String = text
        .split("<<'EOF'\n")
        .nth(1)
        .and_then(|rest| rest.split("\nEOF\n").next())
        .expect("the guide writes the wrapper with a heredoc")
        .to_owned();
    let env = Env::new();
    env.init();
    let sandbox = env.dir.path();
    write(&sandbox.join("alf_data/solr4Backup/x"), b"index");
    write(&sandbox.join("alf_data/contentstore/2026/1.bin"), b"document");
    write(&sandbox.join("alf_data/contentstore.deleted/x"), b"deleted");
    let wrapper = sandbox.join("alfresco-backup.sh");
    write(&wrapper, into_sandbox(&script, &["/alf_data", "/var/"], sandbox).as_bytes());
    let prom = sandbox.join("var/lib/node_exporter/textfile_collector/store-alfresco.prom");
    let log = sandbox.join("var/log/store/alfresco.log");
    for dir in [prom.parent().unwrap(), log.parent().unwrap()] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let exit_code_in_metrics = || {
        let text = std::fs::read_to_string(&prom).unwrap();
        let line = text.lines().find(|l| l.starts_with("store_last_exit_code{")).unwrap();
        line.rsplit(' ').next().unwrap().to_owned()
    };
    let bin = sandbox.join("bin");
    std::os::unix::fs::symlink(crate::support::bin(), {
        std::fs::create_dir_all(&bin).unwrap();
        bin.join("store")
    })
    .unwrap();
    let run = |dump: &str| {
        write(&bin.join("pg_dump"), dump.as_bytes());
        std::fs::set_permissions(
            bin.join("pg_dump"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        Command::new("sh")
            .arg(&wrapper)
            .env("PATH", path)
            .env("STORE_REPO", env.repo())
            .output()
            .unwrap()
    };
    let failed = run("#!/bin/sh\necho 'pg_dump: error: connection refused' >&2\nexit 1\n");
    assert_eq!(failed.status.code(), Some(1), "{}", String::from_utf8_lossy(&failed.stderr));
    assert_eq!(std::fs::read_dir(env.repo().join("snapshots")).unwrap().count(), 0);
    assert_eq!(exit_code_in_metrics(), "1", "the failed night shows in the metrics");
    let ok = run("#!/bin/sh\necho PGDMP dump\n");
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(exit_code_in_metrics(), "0");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("connection refused") || text.contains("component db"), "{text}");
    assert_eq!(text.matches("finished: exit").count(), 2, "{text}");
}

// See: issue 17 ("a systemd service and timer for the nightly Alfresco set, checked with
// systemd-analyze verify in a test").
#[test]
fn the_systemd_units_of_the_alfresco_guide_verify() {
    let units = fenced_blocks(&alfresco_guide(), "ini");
    assert_eq!(units.len(), 2, "a service and a timer");
    let dir = tempfile::tempdir().unwrap();
    // The unit names the wrapper by its installed path; here, a stand-in script.
    let wrapper = dir.path().join("alfresco-backup.sh");
    write(&wrapper, b"#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let service = units[0].replace("/usr/local/bin/alfresco-backup.sh", wrapper.to_str().unwrap());
    write(&dir.path().join("alfresco-backup.service"), service.as_bytes());
    write(&dir.path().join("alfresco-backup.timer"), units[1].as_bytes());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(dir.path().join("alfresco-backup.service"))
        .arg(dir.path().join("alfresco-backup.timer"))
        .output()
        .expect("systemd-analyze (package systemd, installed by .ci/setup)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("alfresco-backup"), "warnings about the units: {stderr}");
}
