#![allow(missing_docs)] // criterion_main! generates an undocumented main
//! Our FastCDC against the `fastcdc` crate's v2020 on the same data and
//! the same size parameters (512 KiB / 1 MiB / 8 MiB).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mapache_store::crypto::SecretKey;
use mapache_store::{Chunker, ChunkerParams};

fn data(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"chunker bench")
        .finalize_xof()
        .fill(&mut out);
    out
}

fn chunkers(c: &mut Criterion) {
    let input = data(64 << 20);
    let params = ChunkerParams::default();
    let ours = Chunker::new(params, &SecretKey::from_bytes([1; 32]));
    let mut group = c.benchmark_group("chunk 64 MiB");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.sample_size(20);
    group.bench_with_input(BenchmarkId::new("mapache", "v2020"), &input, |b, input| {
        b.iter(|| {
            let mut rest = &input[..];
            let mut count = 0usize;
            while !rest.is_empty() {
                let n = ours.cut(rest);
                rest = &rest[n..];
                count += 1;
            }
            count
        })
    });
    group.bench_with_input(
        BenchmarkId::new("fastcdc crate", "v2020"),
        &input,
        |b, input| {
            b.iter(|| {
                fastcdc::v2020::FastCDC::new(
                    input,
                    params.min_size,
                    params.avg_size,
                    params.max_size,
                )
                .count()
            })
        },
    );
    group.finish();
}

criterion_group!(benches, chunkers);
criterion_main!(benches);
