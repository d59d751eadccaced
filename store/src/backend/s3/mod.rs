//! A repository in a bucket of an S3-compatible object store, through the
//! `object_store` crate (signing, retries with backoff, multipart).
//!
//! Objects keep the local layout under the prefix (`config`, `keys/<id>`,
//! `packs/<xx>/<id>`, ...). A PUT is atomic: an object appears whole or
//! not at all, so no temporary names are needed; packs larger than
//! [`MULTIPART_FROM`] go up in parts, which the store assembles only when
//! the upload completes. What the backend relies on, and what happens when
//! two clients race, is in docs/design.md ("S3").
//!
//! The crate is asynchronous; each call runs on a small runtime of its own,
//! from whichever thread calls (the saver's and the restorer's threads give
//! the parallelism).

mod profile;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};

use super::location::S3Location;
use super::{Backend, FileInfo, FileKind, CONFIG_ID};
use crate::error::{Error, Result};
use crate::id::Id;

/// Objects at least this large are uploaded in parts.
const MULTIPART_FROM: usize = 32 << 20;
/// Size of each part.
const PART_SIZE: usize = 16 << 20;

/// A repository in an S3 bucket.
pub struct S3Backend {
    store: Arc<AmazonS3>,
    runtime: tokio::runtime::Runtime,
    location: S3Location,
}

fn io(what: impl std::fmt::Display, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound {
            what: format!("{what} not found"),
        },
        other => Error::io(what.to_string(), std::io::Error::other(describe(&other))),
    }
}

/// The error with its causes, each once (the client's errors often repeat
/// their cause in their own text).
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

impl S3Backend {
    /// A backend for `location`, with credentials and settings from the
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, ...) and the
    /// `AWS_PROFILE` of the shared files.
    pub fn new(location: S3Location) -> Result<S3Backend> {
        let mut builder = AmazonS3Builder::from_env();
        let settings = profile::profile_settings();
        let has = |variable: &str| std::env::var_os(variable).is_some();
        if !has("AWS_ACCESS_KEY_ID") {
            if let Some(key) = settings.get("aws_access_key_id") {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = settings.get("aws_secret_access_key") {
                builder = builder.with_secret_access_key(secret);
            }
            if let Some(token) = settings.get("aws_session_token") {
                builder = builder.with_token(token);
            }
        }
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .ok()
            .or_else(|| settings.get("region").cloned());
        if let Some(region) = region {
            builder = builder.with_region(region);
        }
        let endpoint = location
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| settings.get("endpoint_url").cloned());
        // (The client options hold whether plain HTTP is allowed: set
        // them once, with it.)
        let mut client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(120));
        if let Some(endpoint) = &endpoint {
            // A store of one's own: path-style addressing (most do not
            // serve bucket names as host names), plain HTTP only when the
            // URL says so.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
            client = client.with_allow_http(endpoint.starts_with("http://"));
        }
        let retry = RetryConfig {
            // A few seconds of pauses: a wrong endpoint fails soon.
            max_retries: 5,
            retry_timeout: Duration::from_secs(60),
            ..RetryConfig::default()
        };
        let store = builder
            .with_bucket_name(&location.bucket)
            .with_retry(retry)
            .with_client_options(client)
            .build()
            .map_err(|e| Error::InvalidInput(format!("{location}: {e}")))?;
        let runtime = super::client_runtime("S3")?;
        Ok(S3Backend {
            store: Arc::new(store),
            runtime,
            location,
        })
    }

    fn key(&self, kind: FileKind, id: &Id) -> ObjectPath {
        self.under_prefix(&super::relative_path(kind, id))
    }

    fn under_prefix(&self, name: &str) -> ObjectPath {
        if self.location.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.location.prefix))
        }
    }

    fn shown(&self, key: &ObjectPath) -> String {
        format!("{}: {key}", self.location)
    }

    fn run<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }

    fn put(&self, key: &ObjectPath, data: &[u8], mode: PutMode) -> Result<bool> {
        let store = &self.store;
        let result = self.run(async {
            if data.len() >= MULTIPART_FROM && mode == PutMode::Overwrite {
                let upload = store.put_multipart(key).await?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                writer.write(data);
                return writer.finish().await;
            }
            let payload = PutPayload::from(bytes::Bytes::copy_from_slice(data));
            let options = PutOptions {
                mode: mode.clone(),
                ..PutOptions::default()
            };
            store.put_opts(key, payload, options).await
        });
        match result {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(io(self.shown(key), e)),
        }
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    /// Each request waits on the servers, which answer many side by side;
    /// each read in flight costs a buffer (~5 MiB at its peak), so a dozen
    /// (docs/benchmarks.md has the measurements).
    fn parallel_reads(&self) -> usize {
        12
    }

    fn is_repository(&self) -> Result<bool> {
        let key = self.key(FileKind::Config, &CONFIG_ID);
        match self.run(self.store.head(&key)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(io(self.shown(&key), e)),
        }
    }

    fn create(&self) -> Result<()> {
        let prefix = self.under_prefix("");
        let first = self.run(async {
            let prefix = (!self.location.prefix.is_empty()).then_some(&prefix);
            self.store.list(prefix).next().await
        });
        match first {
            None => Ok(()),
            Some(Ok(_)) => Err(Error::InvalidInput(format!(
                "{} is not empty: a repository needs a prefix of its own",
                self.location
            ))),
            Some(Err(e)) => Err(io(&self.location, e)),
        }
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>> {
        if kind == FileKind::Config {
            let key = self.key(kind, &CONFIG_ID);
            return match self.run(self.store.head(&key)) {
                Ok(meta) => Ok(vec![FileInfo {
                    id: CONFIG_ID,
                    size: meta.size,
                }]),
                Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
                Err(e) => Err(io(self.shown(&key), e)),
            };
        }
        let prefix = self.under_prefix(kind.dir_name());
        let listed: Vec<object_store::Result<object_store::ObjectMeta>> =
            self.run(self.store.list(Some(&prefix)).collect());
        let mut out = Vec::with_capacity(listed.len());
        for meta in listed {
            let meta = meta.map_err(|e| io(self.shown(&prefix), e))?;
            let Some(id) = meta
                .location
                .filename()
                .and_then(|name| name.parse::<Id>().ok())
            else {
                continue;
            };
            out.push(FileInfo {
                id,
                size: meta.size,
            });
        }
        Ok(out)
    }

    fn read(&self, kind: FileKind, id: &Id) -> Result<Vec<u8>> {
        let key = self.key(kind, id);
        self.run(async {
            let got = self.store.get(&key).await?;
            got.bytes().await
        })
        .map(|bytes| bytes.to_vec())
        .map_err(|e| io(self.shown(&key), e))
    }

    fn read_range(&self, kind: FileKind, id: &Id, offset: u64, len: u32) -> Result<Vec<u8>> {
        super::read_range_via_into(self, kind, id, offset, len, super::Access::Once)
    }

    fn read_range_into(
        &self,
        kind: FileKind,
        id: &Id,
        offset: u64,
        len: u32,
        _: super::Access,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        let key = self.key(kind, id);
        let range: Range<u64> = offset..offset + u64::from(len);
        let bytes = self
            .run(self.store.get_range(&key, range))
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => io(self.shown(&key), e),
                // A range beyond the end: the object was cut short.
                e if e.to_string().contains("416") || e.to_string().contains("Range") => {
                    Error::integrity(kind, id, format!("shorter than the range read: {e}"))
                }
                e => io(self.shown(&key), e),
            })?;
        if bytes.len() != len as usize {
            return Err(Error::integrity(
                kind,
                id,
                format!("shorter than {} bytes: truncated", offset + u64::from(len)),
            ));
        }
        buf.clear();
        buf.extend_from_slice(&bytes);
        Ok(0)
    }

    fn write(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<()> {
        self.put(&self.key(kind, id), data, PutMode::Overwrite)
            .map(|_| ())
    }

    fn write_new(&self, kind: FileKind, id: &Id, data: &[u8]) -> Result<bool> {
        self.put(&self.key(kind, id), data, PutMode::Create)
    }

    fn remove(&self, kind: FileKind, id: &Id) -> Result<()> {
        let key = self.key(kind, id);
        match self.run(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io(self.shown(&key), e)),
        }
    }
}
