//! Command-line surface, modelled on `opa build|sign|test|eval` where they overlap.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "lockstep",
    version,
    about = "OPA-compatible policy bundles for MCP fleets, kept in lockstep"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run `opa test`-style unit tests (`test_*` rules) in Rego files and bundles.
    Test(TestArgs),
    /// Build an OPA bundle (tar.gz) from directories and files, optionally signed.
    Build(BuildArgs),
    /// Sign an existing bundle (tar.gz or directory), writing `.signatures.json`.
    Sign(SignArgs),
    /// Verify a bundle's signature and contents the way OPA does.
    Verify(VerifyArgs),
    /// Show what a bundle holds: revision, roots, packages, files, signer.
    Inspect(InspectArgs),
    /// Generate a signing key pair (private and public PEM, or an HMAC secret).
    Keygen(KeygenArgs),
    /// Evaluate a query against policies and data, for debugging a decision.
    Eval(EvalArgs),
    /// Run the whole chain on the embedded example policies: test, keygen, build+sign, verify, eval.
    Demo(DemoArgs),
    /// Run the bundle server (OPA download protocol with long polling, publish, fleet view).
    Server(crate::cmd::server::ServerArgs),
    /// Publish a signed bundle to a lockstep server.
    Publish(crate::cmd::publish::PublishArgs),
    /// Re-activate a kept revision of a bundle on a lockstep server.
    Rollback(crate::cmd::rollback::RollbackArgs),
    /// Show which instances run which revision; exit 1 if any drifts or is unreachable.
    Drift(crate::cmd::drift::DriftArgs),
    /// Run the decision agent: OPA's REST API over bundles kept in lockstep (OPA config file).
    Agent(crate::cmd::agent::AgentArgs),
    /// Run the MCP gateway: every MCP request decided by the signed revision, before any upstream sees it.
    Gateway(crate::cmd::gateway::GatewayArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Pretty,
    Json,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Directories, `.rego`/data files, or bundle tar.gz files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print every test's result, not only failures.
    #[arg(short, long)]
    pub verbose: bool,
    /// Run only tests whose `data.pkg.name` matches this regular expression.
    #[arg(long)]
    pub run: Option<String>,
    #[arg(long, value_enum, default_value = "pretty")]
    pub format: Format,
    /// Ignore files and directories matching these globs.
    #[arg(long)]
    pub ignore: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct SigningArgs {
    /// Private key: a PEM file path or inline PEM; an HMAC secret goes in a file (a named
    /// file that cannot be read is an error, never the key).
    #[arg(long, allow_hyphen_values = true)]
    pub signing_key: Option<String>,
    #[arg(long, default_value = "RS256")]
    pub signing_alg: String,
    /// Key id written as the JWT `kid` header and `keyid` claim.
    #[arg(long = "signing-key-id", alias = "verification-key-id")]
    pub signing_key_id: Option<String>,
    /// JSON file whose claims are merged into the signature payload.
    #[arg(long)]
    pub claims_file: Option<PathBuf>,
    /// Scope claim written into the signature.
    #[arg(long)]
    pub scope: Option<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output file.
    #[arg(short, long, default_value = "bundle.tar.gz")]
    pub output: PathBuf,
    /// Revision written to `.manifest` (default: the git commit when inside a work tree).
    #[arg(short, long)]
    pub revision: Option<String>,
    /// Ignore files and directories matching these globs.
    #[arg(long)]
    pub ignore: Vec<String>,
    /// Accepted for `opa build -b` compatibility; lockstep always builds bundles.
    #[arg(short = 'b', long = "bundle")]
    pub bundle_mode: bool,
    #[command(flatten)]
    pub signing: SigningArgs,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Bundle tar.gz or directory to sign.
    pub path: PathBuf,
    /// Output: a tar.gz for a tar.gz input (default: rewrite in place);
    /// for a directory, where `.signatures.json` is written (default: inside it).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub signing: SigningArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Bundle tar.gz or directory.
    pub path: PathBuf,
    /// Public key PEM file or inline PEM; an HMAC secret goes in a file (a named file
    /// that cannot be read is an error, never the key).
    #[arg(long, allow_hyphen_values = true)]
    pub verification_key: String,
    #[arg(long)]
    pub verification_key_id: Option<String>,
    /// Algorithm the key is configured for; OPA's default is RS256. Inferred from the key when omitted.
    #[arg(long)]
    pub signing_alg: Option<String>,
    #[arg(long)]
    pub scope: Option<String>,
    /// Files (globs) not covered by the signature; repeat the flag or separate with
    /// commas, as OPA's `--exclude-files-verify`.
    #[arg(
        long = "exclude-files",
        alias = "exclude-files-verify",
        value_delimiter = ','
    )]
    pub exclude_files: Vec<String>,
    /// The largest file the bundle may hold, in bytes (OPA's `size_limit_bytes`).
    #[arg(long, default_value_t = DEFAULT_SIZE_LIMIT_BYTES)]
    pub size_limit_bytes: u64,
    #[arg(long, value_enum, default_value = "pretty")]
    pub format: Format,
    /// After verifying, also compile the policy as an agent would on activation.
    #[arg(long)]
    pub load: bool,
}

/// OPA's default `size_limit_bytes` (1 GiB), lockstep's reader's too.
pub const DEFAULT_SIZE_LIMIT_BYTES: u64 = 1024 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct InspectArgs {
    pub path: PathBuf,
    /// The largest file the bundle may hold, in bytes (OPA's `size_limit_bytes`).
    #[arg(long, default_value_t = DEFAULT_SIZE_LIMIT_BYTES)]
    pub size_limit_bytes: u64,
    #[arg(long, value_enum, default_value = "pretty")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    #[arg(long, default_value = "ES256")]
    pub alg: String,
    /// Private key output path; the public key goes next to it with `-pub` before the extension.
    #[arg(short, long, default_value = "signing-key.pem")]
    pub output: PathBuf,
    /// Public key output path.
    #[arg(long)]
    pub public_output: Option<PathBuf>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Policy and data: directories, files or bundle tar.gz files.
    #[arg(
        short = 'd',
        long = "data",
        short_alias = 'b',
        alias = "bundle",
        required = true
    )]
    pub data: Vec<PathBuf>,
    /// Input JSON (or YAML) file.
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Evaluate the query once per JSON line of this file (batch mode, prints one result per line).
    #[arg(long, conflicts_with = "input")]
    pub input_lines: Option<PathBuf>,
    pub query: String,
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Exit 1 when the result is undefined or not `true` (for scripts).
    #[arg(long)]
    pub fail_defined_false: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Work directory (default: a fresh temporary directory, removed afterwards); the
    /// demo rewrites its `policies/` and `fleet/`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Leave the server and the gateways running at the end, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// `json`: print only the facts, as one JSON document, for scripts.
    #[arg(long, value_enum, default_value = "pretty")]
    pub format: Format,
}
