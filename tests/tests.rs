//! End-to-end tests: they drive the built `mapache` binary on real
//! directory trees and check what it wrote, byte for byte.

mod util;

mod clean;
mod corruption;
mod crash;
mod errors;
mod hardening;
mod lifecycle;
#[cfg(feature = "fuse")]
mod mount;
#[cfg(feature = "fuse")]
mod mount_modes;
#[cfg(feature = "fuse")]
mod mount_staging;
mod plaintext;
mod restore_safety;
mod roundtrip;
mod s3;
mod sftp;
mod staging;
