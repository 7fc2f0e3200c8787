//! The OPA bundle format, and nothing else.
//!
//! Owns: reading and writing bundle tar.gz archives and directories, the `.manifest`,
//! mapping `data.json`/`data.yaml` files onto the data tree, manifest roots, the
//! `.signatures.json` file with its JWS (signing and verification, following OPA's
//! `v1/bundle` rules), file hashing, key parsing and generation, and the size limits
//! that keep a hostile archive from hurting the process.
//!
//! Must not: do I/O beyond `Read`/`Write` and local files named by the caller, know
//! about HTTP, or evaluate Rego (compiling policy is `lockstep-policy`'s job).
#![forbid(unsafe_code)]

pub mod canonical;
pub mod error;
pub mod glob;
pub mod hash;
pub mod jws;
pub mod keys;
pub mod model;
mod pem_text;
pub mod signing;
pub mod structured;
pub mod verify;

pub use error::BundleError;
pub use model::{Bundle, BundleFile, Manifest, Module};
