//! The one error type of this crate.
//!
//! Every refusal is a variant with a fixed message. Where OPA has a message for the same
//! refusal, the text is OPA's, byte for byte, so operators and tests can compare them.

use thiserror::Error;

/// Everything that can go wrong while reading, building, signing or verifying a bundle.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BundleError {
    // ---- hashing -------------------------------------------------------------
    /// A JWT `files` entry names a hash algorithm OPA does not know.
    #[error("unsupported hashing algorithm: {0}")]
    UnsupportedHashAlgorithm(String),
    /// A JWT `files` entry has no `algorithm`.
    #[error("no hashing algorithm provided for file {0}")]
    MissingHashAlgorithm(String),
    /// A JWT `files` entry has a `hash` that is not hex.
    #[error("{path}: invalid hex digest in bundle signature: {hash:?}")]
    InvalidDigest { path: String, hash: String },
    /// A file that should be signed hashes to something else than the JWT says.
    #[error("{path}: digest mismatch (want: {want}, got: {got})")]
    DigestMismatch {
        path: String,
        want: String,
        got: String,
    },
    /// A structured file (`data.json`, `.manifest`, ...) is neither JSON nor YAML.
    #[error("bundle load failed on {path}: {message}")]
    StructuredParse { path: String, message: String },

    // ---- keys and algorithms -------------------------------------------------
    /// The configured signature algorithm is not one of the JWA names OPA supports.
    #[error("unknown signature algorithm: {0}")]
    UnknownAlgorithm(String),
    /// No PEM block could be found/decoded where an RSA or EC key was needed.
    #[error("failed to parse PEM block containing the key")]
    PemParse,
    /// A signing key PEM block of a type that cannot sign.
    #[error("unsupported key type: {0}")]
    UnsupportedKeyType(String),
    /// A verification key PEM block of a type that holds no usable key.
    #[error("unsupported PEM block type: {0}")]
    UnsupportedPemBlock(String),
    /// The PEM block decoded but its DER content is not a valid key of that type.
    #[error("failed to parse {kind}: {message}")]
    KeyParse { kind: String, message: String },
    /// The key is valid but of the wrong family/curve for the configured algorithm.
    #[error("key of type {key_type} cannot be used with algorithm {algorithm}")]
    KeyAlgorithmMismatch { key_type: String, algorithm: String },
    /// A key file exists but could not be read.
    #[error("failed to read key file {path}: {message}")]
    KeyFile { path: String, message: String },
    /// Generating a key or a random secret failed.
    #[error("key generation failed: {0}")]
    KeyGeneration(String),

    // ---- JWS -----------------------------------------------------------------
    /// The token is not three base64url segments separated by dots.
    #[error("failed to parse JWS: {0}")]
    MalformedToken(String),
    /// The protected header is not base64url.
    #[error("failed to base64 decode JWT headers: {0}")]
    HeaderBase64(String),
    /// The protected header is not a JSON object.
    #[error("failed to parse JWT headers: {0}")]
    HeaderJson(String),
    /// The payload is not base64url.
    #[error("failed to base64 decode JWT payload: {0}")]
    PayloadBase64(String),
    /// The payload is not the JSON OPA expects (`files`, `keyid`, `scope`, `iat`, `iss`).
    #[error("failed to parse JWT payload: {0}")]
    PayloadJson(String),
    /// The signature segment is not base64url.
    #[error("failed to base64 decode JWT signature: {0}")]
    SignatureBase64(String),
    /// The header says `alg: none`: unsigned tokens are never accepted.
    #[error("failed to verify JWT signature: alg \"none\" is not allowed")]
    AlgNone,
    /// The header carries no `alg`.
    #[error("failed to verify JWT signature: JWT header has no \"alg\"")]
    MissingAlg,
    /// The header `alg` differs from the algorithm configured for the key (algorithm confusion).
    #[error(
        "failed to verify JWT signature: token algorithm {header} does not match the algorithm {configured} configured for the key"
    )]
    AlgMismatch { header: String, configured: String },
    /// The signature does not verify with the configured key.
    #[error("failed to verify JWT signature: {0}")]
    BadSignature(String),
    /// Producing a signature failed.
    #[error("failed to sign JWT: {0}")]
    Signing(String),

    // ---- signature verification (OPA's bundle rules) -------------------------
    #[error(".signatures.json: missing JWT (expected exactly one)")]
    MissingJwt,
    #[error(".signatures.json: multiple JWTs not supported (expected exactly one)")]
    MultipleJwts,
    #[error("no verifier exists under id {0}")]
    UnknownVerifierPlugin(String),
    #[error("verification key ID is empty")]
    KeyIdEmpty,
    #[error("verification key corresponding to ID {0} not found")]
    KeyNotFound(String),
    #[error("scope mismatch")]
    ScopeMismatch,
    #[error("bundle missing .signatures.json file")]
    MissingSignaturesFile,
    #[error("verification key not provided")]
    VerificationKeyNotProvided,
    /// A bundle file that is neither excluded nor listed in the JWT.
    #[error("file {0} not included in bundle signature")]
    FileNotSigned(String),
    /// JWT entries left over after every bundle file was checked (sorted).
    #[error("file(s) [{}] specified in bundle signatures but not found in the target bundle", .0.join(" "))]
    SignedFilesNotFound(Vec<String>),
    #[error("bundle load failed on signatures decode: {0}")]
    SignaturesDecode(String),

    // ---- archive -------------------------------------------------------------
    #[error("bundle read failed: archive read failed: gzip: invalid header")]
    NotGzip,
    /// The gzip or tar stream is corrupt or truncated.
    #[error("bundle read failed: archive read failed: {0}")]
    Archive(String),
    /// An entry name that would leave the bundle root (`..`), or is otherwise unusable.
    #[error("bundle read failed: entry '{0}' escapes the bundle root (path traversal)")]
    PathTraversal(String),
    /// An entry name that is not valid UTF-8 or is empty.
    #[error("bundle read failed: invalid entry name {0:?}")]
    InvalidEntryName(String),
    /// Symlinks, hardlinks, devices, fifos, sparse files: refused on purpose (OPA skips them).
    #[error(
        "bundle read failed: entry '{name}' is a {kind}; only regular files and directories are allowed"
    )]
    UnsupportedEntryType { name: String, kind: String },
    #[error("bundle read failed: duplicate entry '{0}'")]
    DuplicateEntry(String),
    #[error("bundle read failed: more than {limit} entries")]
    TooManyFiles { limit: u64 },
    #[error("bundle read failed: compressed size exceeds limit ({limit} bytes)")]
    CompressedTooLarge { limit: u64 },
    #[error("bundle read failed: uncompressed size exceeds limit ({limit} bytes)")]
    UncompressedTooLarge { limit: u64 },
    /// OPA's per-file size text.
    #[error("bundle file '{path}' size ({size} bytes) exceeded max size ({limit} bytes)")]
    FileTooLarge { path: String, size: u64, limit: u64 },
    /// Reading a directory bundle or an input path failed.
    #[error("failed to read {path}: {message}")]
    Io { path: String, message: String },
    /// Writing the archive failed.
    #[error("bundle write failed: {0}")]
    Write(String),

    // ---- contents --------------------------------------------------------------
    /// A data file does not parse, or cannot be merged into the data tree.
    #[error("bundle load failed on {path}: {message}")]
    DataLoad { path: String, message: String },
    #[error("bundle load failed on manifest decode: {0}")]
    ManifestDecode(String),
    #[error("bundle load failed on patch decode: {0}")]
    PatchDecode(String),
    /// A `.rego` file whose `package` line cannot be found or read.
    #[error("{path}: rego_parse_error: {message}")]
    ModulePackage { path: String, message: String },
    #[error("unknown bundle rego-version {version} for file '{path}'")]
    UnknownRegoVersion { version: i64, path: String },
    #[error("failed to compile glob pattern {pattern}: {message}")]
    BadGlob { pattern: String, message: String },
    #[error("delta bundle expected to contain only patch file but {0} files found")]
    DeltaWithFiles(String),

    // ---- manifest roots ------------------------------------------------------
    #[error("manifest has overlapped roots: '{0}' and '{1}'")]
    RootsOverlap(String, String),
    #[error("manifest roots {} do not permit '{package}' in module '{path}'", fmt_roots(.roots))]
    ModuleOutsideRoots {
        roots: Vec<String>,
        package: String,
        path: String,
    },
    #[error(
        "manifest roots {} do not permit data at path '/{path}' (hint: check bundle directory structure)",
        fmt_roots(.roots)
    )]
    DataOutsideRoots { roots: Vec<String>, path: String },
    #[error("manifest roots {} do not permit data patch at path '{path}'", fmt_roots(.roots))]
    PatchOutsideRoots { roots: Vec<String>, path: String },
    #[error("manifest references wasm module '{0}' but the module file does not exist")]
    WasmModuleMissing(String),
    #[error("manifest roots {} do not permit '{entrypoint}' entrypoint for wasm module '{module}'", fmt_roots(.roots))]
    WasmEntrypointOutsideRoots {
        roots: Vec<String>,
        entrypoint: String,
        module: String,
    },
    #[error("entrypoint '{0}' cannot be used by more than one wasm module")]
    WasmEntrypointReused(String),

    // ---- building --------------------------------------------------------------
    #[error("no input paths given")]
    NoInputs,
}

/// Go's `%v` of a `[]string`: `[a b c/d]`.
pub(crate) fn fmt_roots(roots: &[String]) -> String {
    format!("[{}]", roots.join(" "))
}

/// Shorthand used throughout the crate.
pub type Result<T, E = BundleError> = std::result::Result<T, E>;
