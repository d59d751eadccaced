//! Every decoder of stored bytes, fed arbitrary bytes: an error, never a
//! panic, and never an allocation larger than the input justifies.
//!
//! "Justifies": 64 bytes of memory per input byte, plus the 1 MiB that
//! serde lets a decoder reserve up front for a sequence whose length
//! prefix it has not checked yet. A length prefix of four billion in a
//! ten-byte input must not reserve gigabytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use mapache_store::decode_footer;
use mapache_store::key_file_params;
use mapache_store::snapshot::Snapshot;
use mapache_store::tree::Tree;
use mapache_store::IndexFile;
use mapache_store::{BlobId, Id, PackId, SnapshotId};
use proptest::prelude::*;

/// Passes every allocation to the system allocator and, while the
/// current thread measures, remembers the largest one.
struct Measuring;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    if MEASURING.try_with(Cell::get).unwrap_or(false) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Measuring {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Measuring = Measuring;

/// Runs `decode` on `input`, asserting it does not allocate beyond the bound.
fn within_bound<T>(input: &[u8], decode: impl FnOnce(&[u8]) -> T) -> T {
    LARGEST.store(0, Ordering::Relaxed);
    MEASURING.with(|m| m.set(true));
    let out = decode(input);
    MEASURING.with(|m| m.set(false));
    let largest = LARGEST.load(Ordering::Relaxed);
    let bound = 64 * input.len() + (1 << 20) + 4096;
    assert!(
        largest <= bound,
        "{largest} bytes allocated at once for {} bytes of input",
        input.len()
    );
    out
}

/// Arbitrary bytes, and bytes that start like the real thing (so that the
/// decoders get past their first checks).
fn inputs(prefix: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(move |tail| {
            let mut v = prefix.to_vec();
            v.extend(tail);
            v
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn index_files(bytes in inputs(&[1, 0, 0, 0, 0, 1, 0, 0, 0])) {
        let _ = within_bound(&bytes, |b| IndexFile::decode(&Id::default(), b));
    }

    #[test]
    fn pack_footers(bytes in inputs(&[1, 0, 0xff, 0xff, 0xff, 0xff])) {
        let _ = within_bound(&bytes, |b| decode_footer(&PackId::default(), b));
    }

    #[test]
    fn trees(bytes in inputs(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f])) {
        let _ = within_bound(&bytes, |b| Tree::decode(&BlobId::default(), b));
    }

    #[test]
    fn snapshots(bytes in inputs(br#"{"version":1,"paths":["#)) {
        let _ = within_bound(&bytes, |b| Snapshot::decode(&SnapshotId::default(), b));
    }

    #[test]
    fn key_files(bytes in inputs(br#"{"version":1,"kdf":"argon2id","memory_kib":"#)) {
        let _ = within_bound(&bytes, |b| key_file_params(&Id::default(), b));
    }
}

#[test]
fn huge_length_prefixes_reserve_nothing_large() {
    // Counts of four billion entries in a few bytes.
    let _ = within_bound(
        &[
            1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff,
        ],
        |b| IndexFile::decode(&Id::default(), b),
    );
    let _ = within_bound(&[1, 1, 0xff, 0xff, 0xff, 0xff], |b| {
        decode_footer(&PackId::default(), b)
    });
    let _ = within_bound(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f], |b| {
        Tree::decode(&BlobId::default(), b)
    });
}
