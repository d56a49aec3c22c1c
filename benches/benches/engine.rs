//! Criterion micro-benchmarks: chunking, hashing and compression throughput, and snapshot and
//! restore of a generated contentstore, in bytes per second (`cargo bench -p store-benches`).

// A benchmark that cannot set up has nothing to measure: failing loudly is the right response.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use store::{Chunker, ChunkerParams, Compressor, NoProgress, Repository};
use store_benches::{document_bytes, generate_contentstore, media_bytes};

fn stages(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(1);
    let docs = document_bytes(&mut rng, 64 << 20);
    let media = media_bytes(&mut rng, 64 << 20);
    let chunker = Chunker::new(&ChunkerParams::default_with_seed(7));

    let mut g = c.benchmark_group("stage");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(media.len() as u64));
    g.bench_function("chunk", |b| {
        b.iter(|| {
            let mut n = 0usize;
            chunker
                .cut_all(&media, true, |c| {
                    n += c.len();
                    Ok::<_, ()>(())
                })
                .ok();
            black_box(n)
        });
    });
    g.bench_function("blake3_1mib_chunks", |b| {
        b.iter(|| {
            media.chunks(1 << 20).map(|c| blake3::hash(black_box(c)).as_bytes()[0]).sum::<u8>()
        });
    });
    for level in [1, 3] {
        for (name, data) in [("documents", &docs), ("media", &media)] {
            g.bench_function(format!("zstd{level}_{name}"), |b| {
                let mut comp = Compressor::new(level).unwrap();
                let mut out = Vec::new();
                b.iter(|| {
                    for chunk in data.chunks(1 << 20) {
                        black_box(comp.compress(chunk, &mut out));
                    }
                });
            });
        }
    }
    g.finish();
}

fn snapshot_and_restore(c: &mut Criterion) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("contentstore");
    let gen = generate_contentstore(&src, 42, 128 << 20).unwrap();
    let sources = vec![store::SourceSpec::path("contentstore", &src)];
    let opts = store::SnapshotOptions { sources, host: "bench".into(), ..Default::default() };
    let full = store::SnapshotOptions { parent: store::ParentChoice::Full, ..opts.clone() };

    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(gen.bytes));
    g.bench_function("snapshot_full", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir_in(work.path()).unwrap();
                let repo = Repository::init(&dir.path().join("repo"), &Default::default()).unwrap();
                (dir, repo)
            },
            |(dir, repo)| {
                store::snapshot(&repo, &full, &NoProgress).unwrap();
                dir
            },
            BatchSize::PerIteration,
        );
    });
    let repo_dir = tempfile::tempdir_in(work.path()).unwrap();
    let repo = Repository::init(&repo_dir.path().join("repo"), &Default::default()).unwrap();
    let report = store::snapshot(&repo, &opts, &NoProgress).unwrap();
    g.bench_function("snapshot_incremental_unchanged", |b| {
        b.iter(|| store::snapshot(&repo, &opts, &NoProgress).unwrap());
    });
    g.bench_function("snapshot_full_reread_unchanged", |b| {
        b.iter(|| store::snapshot(&repo, &full, &NoProgress).unwrap());
    });
    g.bench_function("restore", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(work.path()).unwrap(),
            |out| {
                let ropts =
                    store::RestoreOptions { target: out.path().join("t"), ..Default::default() };
                store::restore(&repo, &report.manifest, &ropts, &NoProgress).unwrap();
                out
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

criterion_group!(benches, stages, snapshot_and_restore);
criterion_main!(benches);
