//! Hostile sets, crafted with the engine's own writers (packs, index files, manifests) so that
//! every hash is right and only the names and layout are malicious: restore writes nothing
//! outside its target, names what it refused, and exits 1 (RELIABILITY.md, "Restore: path
//! traversal and symlink races").

use std::ffi::OsStr;
use std::path::Path;

use store::{
    BlobKind, ChunkRefs, Component, ComponentKind, Compressor, Content, EncodedBlob, Id,
    IndexedPack, Metadata, Node, PackWriter, Repository, TreeBlob, TreeId,
};

use crate::support::{write, Env};

fn empty_file(name: &[u8]) -> Node {
    Node {
        name: name.to_vec(),
        meta: Metadata { mode: 0o100_644, ..Metadata::default() },
        content: Content::File { size: 0, chunks: ChunkRefs::Inline(Vec::new()) },
    }
}

fn dir(name: &[u8], tree: TreeId) -> Node {
    Node {
        name: name.to_vec(),
        meta: Metadata { mode: 0o040_755, ..Metadata::default() },
        content: Content::Dir { tree },
    }
}

fn symlink(name: &[u8], target: &Path) -> Node {
    Node {
        name: name.to_vec(),
        meta: Metadata { mode: 0o120_777, ..Metadata::default() },
        content: Content::Symlink { target: target.as_os_str().as_encoded_bytes().to_vec() },
    }
}

/// Writes tree blobs into a new pack and index file of the repository, as the engine would.
struct Crafter {
    repo: Repository,
    pack: PackWriter,
    compressor: Compressor,
    added: Vec<Id>,
}

impl Crafter {
    fn new(env: &Env) -> Self {
        let repo = crate::support::open_repo(&env.repo());
        let pack =
            PackWriter::create(&repo.layout().tmp_dir(), repo.config().version, repo.crypto())
                .unwrap();
        Crafter { repo, pack, compressor: Compressor::new(3).unwrap(), added: Vec::new() }
    }

    fn tree(&mut self, tree: &TreeBlob) -> TreeId {
        let raw = tree.encode(self.repo.config().version).unwrap();
        let id = self.repo.blob_id(&raw);
        if !self.added.contains(&id) {
            let blob = EncodedBlob::encode(
                id,
                BlobKind::Tree,
                &raw,
                &mut self.compressor,
                self.repo.crypto(),
            )
            .unwrap();
            self.pack.add(&blob).unwrap();
            self.added.push(id);
        }
        TreeId(id)
    }

    /// Seals the pack, writes its index file and a set with `components` (newest of all).
    fn commit(self, components: Vec<Component>) {
        let layout = self.repo.layout().clone();
        let sealed = self.pack.seal(|id| layout.pack(id)).unwrap();
        self.repo
            .save_index_file(&[IndexedPack {
                id: sealed.id,
                len: sealed.len,
                entries: sealed.entries,
            }])
            .unwrap();
        let (_, mut manifest) = self.repo.resolve_snapshot("latest").unwrap();
        manifest.time_ns += 3_600_000_000_000;
        manifest.parent = None;
        manifest.components = components;
        self.repo.save_snapshot(&manifest).unwrap();
    }
}

fn component(name: &str, kind: ComponentKind, root: TreeId) -> Component {
    Component {
        name: name.into(),
        source: b"crafted".to_vec(),
        kind,
        root,
        meta: Metadata { mode: 0o040_755, ..Metadata::default() },
        start_ns: 0,
        end_ns: 0,
        counts: store::Counts::default(),
    }
}

/// Every path below `dir`, recursively (not following symlinks).
fn everything(dir: &Path) -> Vec<String> {
    crate::support::snapshot_tree(dir)
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

#[test]
fn hostile_names_and_symlinked_parents_write_nothing_outside_the_target() {
    let env = Env::new();
    env.init();
    write(&env.path("seed/a.txt"), b"seed");
    env.snapshot(&[&env.path("seed")]);
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let mut c = Crafter::new(&env);
    let mut components = Vec::new();
    // One directory per hostile name: each tree is refused on decode.
    for (i, name) in [b"..".as_slice(), b"../../outside/escaped", b"a/b", b"", b"x\0y", b"."]
        .into_iter()
        .enumerate()
    {
        let root = c.tree(&TreeBlob::Leaf(vec![empty_file(name)]));
        components.push(component(&format!("names{i}"), ComponentKind::Dir, root));
    }
    // Out of order and repeated names.
    let root = c.tree(&TreeBlob::Leaf(vec![empty_file(b"b"), empty_file(b"a")]));
    components.push(component("order", ComponentKind::Dir, root));
    // A symlink to the outside, then (on the next page) a directory of the same name with a
    // file beneath it: restoring the file would write through the symlink.
    let below = c.tree(&TreeBlob::Leaf(vec![empty_file(b"escaped")]));
    let page1 = c.tree(&TreeBlob::Leaf(vec![symlink(b"l", &outside)]));
    let page2 = c.tree(&TreeBlob::Leaf(vec![dir(b"l", below)]));
    let root = c.tree(&TreeBlob::Pages(vec![page1, page2]));
    components.push(component("pages", ComponentKind::Dir, root));
    // A file component whose one entry is named `..`.
    let root = c.tree(&TreeBlob::Leaf(vec![empty_file(b"..")]));
    components.push(component("file", ComponentKind::File, root));
    c.commit(components);

    let target = env.path("restore/target");
    for extra in [&[][..], &["--overwrite", "always"][..]] {
        let mut args = vec![OsStr::new("latest"), OsStr::new("--target"), target.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        let run = env.run("restore", &args);
        assert_eq!(run.code, 1, "{}", run.stderr);
        for named in
            ["names0", "names2", "order", "pages: tree", "name \"l\" is out of order", "file: tree"]
        {
            assert!(run.stderr.contains(named), "{named} not named in:\n{}", run.stderr);
        }
        assert!(
            everything(&outside).iter().all(|p| p.is_empty()),
            "written outside: {:?}",
            everything(&outside)
        );
        let around: Vec<String> = std::fs::read_dir(env.path("restore"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(around, ["target"], "nothing beside the target");
        assert!(!env.path("escaped").exists() && !env.path("outside/escaped").exists());
    }
    // The symlink itself was restored as a symlink, and never followed.
    let l = target.join("pages/l");
    assert!(std::fs::symlink_metadata(&l).unwrap().file_type().is_symlink());
    // The dry run refuses the same trees, and so does the mount (EIO, no entries).
    let dry = env.run("restore", &["latest", "--dry-run"]);
    assert_eq!(dry.code, 1);
    assert!(dry.stderr.contains("names0"), "{}", dry.stderr);
    let m = crate::mount::Mounted::new(&env, "mount");
    for name in ["names0", "names2", "order"] {
        let listed = std::fs::read_dir(m.point.join("latest").join(name))
            .and_then(|entries| entries.collect::<std::io::Result<Vec<_>>>());
        assert_eq!(listed.map_err(|e| e.raw_os_error()).err(), Some(Some(5)), "{name}");
    }
    assert!(m.point.join("latest/pages/l").symlink_metadata().unwrap().file_type().is_symlink());
    assert!(std::fs::metadata(m.point.join("latest/file")).is_err());
}
