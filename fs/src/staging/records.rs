//! Keeping the staging area's records in the repository current (see
//! `mapache_store::StagingRecord`): `clean`, on this machine or another,
//! keeps what they name.
//!
//! A record is appended, before the journal refers to them, for the blobs
//! of every upload; once an area has many, they are folded into one that
//! names everything its changes refer to. A commit or a reset starts over
//! with one record for the new base. Every write of a record happens under
//! the repository lock the staging's user holds, so `clean` (which needs
//! the lock exclusively to delete) never sees an upload without its record.

use mapache_store::backend::FileKind;
use mapache_store::{BlobId, Id, StagingRecord};

use super::{Inner, Staging};
use crate::error::FsResult;

/// Records an area may have before they are folded into one.
const FOLD_AFTER: usize = 16;

/// What [`Staging`] keeps about its records.
pub(super) struct Records {
    /// The area's id.
    area: Id,
    host: String,
    path: String,
    /// The area's records in the repository, oldest first.
    ids: Vec<Id>,
}

impl Records {
    /// The records of the area in `path` that the repository already has.
    /// Another area's damaged record does not concern this one (only
    /// `clean` must refuse it).
    pub(super) fn find(repo: &mapache_store::Repository, path: &str) -> FsResult<Records> {
        let host = mapache_store::hostname();
        let area = StagingRecord::area_id(&host, path);
        let mut ids = Vec::new();
        for id in repo.backend().list_ids(FileKind::Staging)? {
            if let Ok(record) = repo.load::<StagingRecord>(&id) {
                if record.area == area {
                    ids.push(id);
                }
            }
        }
        Ok(Records {
            area,
            host,
            path: path.to_string(),
            ids,
        })
    }

    /// Whether the repository has none of the area's records.
    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl Staging {
    fn record_of(&self, inner: &Inner, blobs: Vec<BlobId>) -> StagingRecord {
        let records = &inner.records;
        StagingRecord {
            version: 1,
            area: records.area,
            host: records.host.clone(),
            path: records.path.clone(),
            base: inner.base,
            base_tree: inner.base_tree,
            blobs,
            time: mapache_store::now(),
        }
    }

    /// Adds a record naming `blobs`, which the journal is about to refer
    /// to; folds the area's records when there are many.
    pub(super) fn publish(&self, inner: &mut Inner, blobs: Vec<BlobId>) -> FsResult<()> {
        if blobs.is_empty() {
            return Ok(());
        }
        let record = self.record_of(inner, blobs);
        let id = self.repo.save_staging_record(&record)?;
        inner.records.ids.push(id);
        if inner.records.ids.len() > FOLD_AFTER {
            self.fold(inner)?;
        }
        Ok(())
    }

    /// Replaces the area's records by one naming its base and every blob
    /// its changes (journaled, or about to be) refer to.
    pub(super) fn fold(&self, inner: &mut Inner) -> FsResult<()> {
        let mut blobs: Vec<BlobId> = inner
            .overlay
            .files
            .values()
            .flat_map(|file| {
                let f = file.lock();
                if f.fid == 0 {
                    Vec::new()
                } else {
                    f.node.content.clone()
                }
            })
            .collect();
        for op in &inner.imports {
            if let super::journal::Op::Content { content, .. } = op {
                blobs.extend_from_slice(content);
            }
        }
        blobs.sort_unstable();
        blobs.dedup();
        self.replace_records(inner, blobs)
    }

    /// Replaces the area's records by one naming its base and `blobs`.
    /// The new record is durable before the old ones go.
    pub(super) fn replace_records(&self, inner: &mut Inner, blobs: Vec<BlobId>) -> FsResult<()> {
        let old = std::mem::take(&mut inner.records.ids);
        // An empty area without a base protects nothing.
        if inner.base.is_some() || !blobs.is_empty() {
            let record = self.record_of(inner, blobs);
            let id = self.repo.save_staging_record(&record)?;
            inner.records.ids.push(id);
        }
        for old in old {
            self.repo.remove_staging_record(&old)?;
        }
        Ok(())
    }
}
