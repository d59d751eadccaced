#![allow(missing_docs)] // criterion_main! generates an undocumented main
//! Per-byte costs of what every blob goes through: AES-256-GCM-SIV sealing
//! and opening, and the keyed BLAKE3 id, on 1 MiB (about one chunk).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mapache_store::crypto::{Cipher, IdHasher, ObjectKind, SecretKey};
use mapache_store::Id;

fn crypto(c: &mut Criterion) {
    let key = SecretKey::from_bytes([7; 32]);
    let cipher = Cipher::new(&key);
    let hasher = IdHasher::new(&key);
    let plain = vec![0x5au8; 1 << 20];
    let id = Id::random();
    let sealed = cipher.encrypt(ObjectKind::DataBlob, &id, &plain);

    let mut group = c.benchmark_group("1 MiB");
    group.throughput(Throughput::Bytes(plain.len() as u64));
    let mut out = Vec::new();
    group.bench_function("AES-256-GCM-SIV seal", |b| {
        b.iter(|| {
            out.clear();
            cipher.encrypt_into(ObjectKind::DataBlob, &id, &plain, &mut out);
        })
    });
    group.bench_function("AES-256-GCM-SIV open", |b| {
        b.iter(|| cipher.decrypt(ObjectKind::DataBlob, &id, &sealed).unwrap())
    });
    group.bench_function("keyed BLAKE3", |b| b.iter(|| hasher.hash(&plain)));
    group.finish();
}

criterion_group!(benches, crypto);
criterion_main!(benches);
