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

mod assemble;
pub mod build;
pub mod canonical;
pub mod data;
pub mod error;
pub mod glob;
pub mod hash;
pub mod jws;
pub mod keys;
pub mod model;
pub mod package;
mod pem_text;
pub mod protocol;
pub mod reader;
pub mod roots;
pub mod signing;
pub mod structured;
pub mod verify;
pub mod writer;

pub use build::{BuildOptions, build_bundle};
pub use error::BundleError;
pub use model::{Bundle, BundleFile, Manifest, Module, Patch, PatchOperation, SignaturesConfig};
pub use reader::{Limits, ReadOptions, read_dir, read_tar_gz};
pub use signing::{SigningConfig, sign_bundle, sign_files, signatures_json};
pub use verify::{DecodedSignature, KeyConfig, VerificationConfig, verify_bundle};
pub use writer::{write_tar_gz, write_tar_gz_with};
