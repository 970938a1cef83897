//! One immutable artifact, promoted from environment to environment and never rebuilt: pushed
//! once into the central store under its SHA-256 digest, copied (and verified) into each
//! environment's artifact location, with an append-only history of what was live where.
//!
//! Contract:
//! - **Content-addressed.** [`Promoter::push`] stores a file at `artifacts/sha256/<hex>` in the
//!   central store (nothing new when it is already there) and records `NAME@VERSION` → digest,
//!   once: the same version with other bytes is refused. A reference (`NAME@sha256:<hex>`,
//!   `sha256:<hex>`, `NAME@VERSION`, `NAME:VERSION`) is resolved to a digest once, up front,
//!   and everything after works on that digest.
//! - **Verified on every copy.** A promotion copies the artifact from the required
//!   environment's location (else the central store) to the target's location through a
//!   stream that hashes it and fails at its end on a mismatch, so a tampered artifact never
//!   completes at the destination and nothing is recorded ([`PromoteError::Tampered`]). An
//!   artifact already at the destination is re-hashed instead.
//! - **Refusals** ([`PromoteError::is_refusal`], the CLI's exit 3): the digest was never live in
//!   the `requires` environment, or was rolled back there as bad; the environment is frozen
//!   (unless `override_freeze` with a reason, which is recorded); the bytes do not match.
//!   A rollback is never blocked by a freeze.
//! - **Append-only history** in the central store at `releases/<env>/<seq:010>.json`, each
//!   record created with [`PutMode::IfAbsent`](ferry_store::PutMode): of two concurrent
//!   promotions to one environment exactly one gets the sequence number, the other
//!   [`PromoteError::Conflict`] (retry). Statuses (`live`, `superseded`, `bad`) are derived on
//!   reading, since records never change.
//! - **gc** never removes an artifact that any environment's last N releases refer to, nor one
//!   pushed within [`GcRequest::min_age`] (it may be about to be promoted).
//! - Nothing prints; the clock (`now`) and the actor are parameters, never read here.
//!
//! Key design decision: **the record is the commit, and it is written last.** Every check and
//! every copy happens before the release record is created, and creating it is one atomic
//! create-if-absent of the next sequence number. So a promotion either is in the history, with
//! its verified artifact in place, or did not happen; a failed or losing run leaves at most a
//! verified, content-addressed copy, which is harmless. [`Promoter::plan_promotion`] and
//! [`Plan::commit`] expose the two halves (the CLI can show a plan before committing it).
//!
//! Artifact locations are a seam, [`ArtifactLocation`], with two implementations: stores
//! ([`StoreLocation`]) and OCI registries ([`OciLocation`], `oci://HOST/REPO[:TAG]`). For a
//! registry the artifact is an image and its digest the manifest digest; the reference is
//! `REGISTRY/REPO@sha256:<hex>` or `REGISTRY/REPO:TAG` (resolved once, up front), the first
//! environment of a chain copies from that repository, and `copy_to` mounts blobs within one
//! registry. After the record is committed, [`ArtifactLocation::make_live`] moves the
//! environment's tag; promoting a digest that is already live applies it again, which repairs
//! a tag that failed to move. A `requires` chain never mixes registries and stores.
//!
//! ```no_run
//! # async fn demo(config: &ferry_core::ConfigFile) -> Result<(), Box<dyn std::error::Error>> {
//! use ferry_promote::{Promoter, PromoteRequest};
//! let central = ferry_store::open("s3://ferry/central", &Default::default()).await?;
//! let promoter = Promoter::from_config(central, config, Default::default())?;
//! let report = promoter
//!     .promote(PromoteRequest {
//!         reference: "app@1.4.2".into(),
//!         to: "staging".into(),
//!         reason: None,
//!         override_freeze: false,
//!         actor: "ci@runner".into(),
//!         now: chrono::Utc::now(),
//!     })
//!     .await?;
//! assert_eq!(report.release.seq, 1);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferry_core::ConfigFile;
use ferry_store::{ObjectStore, StoreOptions};
use serde::Serialize;

mod artifact;
mod digest;
mod error;
pub mod freeze;
mod history;
mod location;
mod oci;

pub use artifact::Artifact;
pub use digest::{Digest, Reference};
pub use error::{PromoteError, Result};
pub use freeze::FreezeWindow;
pub use history::{Action, Release, RolloutHostRecord, RolloutRecord, Status};
pub use location::{
    ArtifactLocation, BLOB_PREFIX, CopyOutcome, LocFut, LocationUrl, StoreLocation, copy_verified,
    open_location, verify_at,
};
pub use oci::{Credentials, ImageRef, MANIFEST_TYPES, OciLocation, OciUrl, RegistryOptions};

use artifact::VersionRecord;
use history::{History, Record};

/// One environment, resolved from `[env.<name>]`.
#[derive(Debug, Clone)]
pub struct EnvSpec {
    pub name: String,
    /// Where its artifacts live (a store URL); `None`: in the central store.
    pub artifacts: Option<String>,
    /// The environment a release must have been live in first.
    pub requires: Option<String>,
    /// When promotions are refused (see [`freeze::windows_for`] for the defaults).
    pub freeze: Vec<FreezeWindow>,
}

impl EnvSpec {
    /// Reads an `[env.<name>]` section; a production environment without a `freeze` key gets
    /// the default freeze (see [`freeze::PRODUCTION_NAMES`]).
    pub fn from_config(name: &str, section: &ferry_core::config::EnvSection) -> Result<Self> {
        let freeze = freeze::windows_for(name, section.freeze.as_deref()).map_err(|reason| {
            PromoteError::BadEnvConfig {
                env: name.to_string(),
                reason,
            }
        })?;
        Ok(EnvSpec {
            name: name.to_string(),
            artifacts: section.artifacts.clone(),
            requires: section.requires.clone(),
            freeze,
        })
    }
}

/// `ferry artifact push`.
#[derive(Debug, Clone)]
pub struct PushRequest {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub actor: String,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// `NAME@sha256:<hex>`
    pub reference: String,
    pub name: String,
    pub version: String,
    pub digest: Digest,
    pub size: u64,
    /// False when the bytes were already in the store (nothing new was stored).
    pub stored: bool,
    /// When this version was first pushed.
    pub pushed_at: DateTime<Utc>,
}

/// `ferry promote REF --to ENV`.
#[derive(Debug, Clone)]
pub struct PromoteRequest {
    pub reference: String,
    pub to: String,
    pub reason: Option<String>,
    /// Promote despite a freeze window; needs a `reason`, which is recorded with the override.
    pub override_freeze: bool,
    pub actor: String,
    pub now: DateTime<Utc>,
}

/// `ferry rollback --env ENV [--to SEQ|DIGEST|VERSION]`.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    pub env: String,
    pub to: Option<RollbackTarget>,
    pub reason: Option<String>,
    pub actor: String,
    pub now: DateTime<Utc>,
}

/// What `--to` names: a release's sequence number, a digest, or a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTarget {
    Seq(u64),
    Digest(Digest),
    Version(String),
}

impl FromStr for RollbackTarget {
    type Err = PromoteError;

    /// All digits: a sequence number; `sha256:…`: a digest; anything else: a version.
    fn from_str(s: &str) -> Result<Self> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let seq = s.parse().map_err(|_| {
                PromoteError::Invalid(format!("`{s}` is too large for a sequence number"))
            })?;
            return Ok(RollbackTarget::Seq(seq));
        }
        if s.starts_with("sha256:") {
            return Ok(RollbackTarget::Digest(s.parse()?));
        }
        digest::check_version(s).map_err(|reason| PromoteError::BadReference {
            reference: s.to_string(),
            reason,
        })?;
        Ok(RollbackTarget::Version(s.to_string()))
    }
}

/// What a deployment records with a release (all optional: a plain `ferry promote` records
/// none of it).
#[derive(Debug, Clone, Default)]
pub struct DeployInfo {
    /// The highest applied migration the release runs against.
    pub schema_version: Option<i64>,
    /// The backup taken before the release's migrations.
    pub backup_id: Option<String>,
    /// The sequence number of the deployment record (`ferry deploy status`).
    pub deploy: Option<u64>,
}

/// A promotion or rollback that passed its checks and whose artifact is in place, waiting
/// to be recorded.
pub struct Plan {
    central: Arc<dyn ObjectStore>,
    env: String,
    record: Record,
    location: String,
    /// The location itself, told to serve the release once it is recorded.
    dest: Arc<dyn ArtifactLocation>,
    /// The reference that re-applies the release if that fails.
    retry: String,
    source: Option<String>,
    transfer: CopyOutcome,
}

/// The result of a promotion or rollback.
#[derive(Debug, Clone, Serialize)]
pub struct PromoteReport {
    pub env: String,
    /// The new (or, when nothing changed, the current) live release.
    #[serde(flatten)]
    pub release: Release,
    /// The digest that was live before (null for the first release).
    pub previous: Option<Digest>,
    /// False when the artifact was already live there and nothing was recorded.
    pub changed: bool,
    /// The environment's artifact location.
    pub location: String,
    /// Where the artifact was copied from (null when it was already in place).
    pub source: Option<String>,
    /// Payload bytes that passed through ferry (0 for a server-side copy).
    pub bytes_copied: u64,
    /// Bytes ferry read to check the digest (0 when the server proved it).
    pub bytes_verified: u64,
    /// True when the artifact was copied server-side (one filesystem, one S3 endpoint, one
    /// registry), without its bytes passing through ferry.
    pub server_side: bool,
}

impl Plan {
    pub fn env(&self) -> &str {
        &self.env
    }

    pub fn seq(&self) -> u64 {
        self.record.seq
    }

    pub fn digest(&self) -> Digest {
        self.record.digest
    }

    /// The release's name and version, as they will be recorded.
    pub fn artifact(&self) -> Artifact {
        Artifact {
            name: self.record.name.clone(),
            version: self.record.version.clone(),
            digest: self.record.digest,
        }
    }

    /// Records, with the release, the schema version it runs against, the backup taken
    /// before its migrations and the deployment that made it live (`ferry deploy`, which
    /// `ferry rollback` reads to bring the schema back with the artifact).
    pub fn with_deploy(mut self, info: DeployInfo) -> Self {
        self.record.schema_version = info.schema_version;
        self.record.backup_id = info.backup_id;
        self.record.deploy = info.deploy;
        self
    }

    /// Records the release, if its sequence number is still free; else
    /// [`PromoteError::Conflict`], and nothing is recorded.
    pub async fn commit(self) -> Result<PromoteReport> {
        History::append(&self.central, &self.env, &self.record).await?;
        tracing::info!(env = %self.env, seq = self.record.seq, digest = %self.record.digest,
            action = ?self.record.action, "release recorded");
        // The record is the commit; moving the tag follows it, and promoting the live digest
        // again repeats it (see `plan_promotion`).
        if let Err(e) = self.dest.make_live(&self.record.digest).await {
            return Err(PromoteError::NotLive {
                env: self.env.clone(),
                seq: self.record.seq,
                digest: self.record.digest,
                location: self.location.clone(),
                retry: self.retry.clone(),
                source: Box::new(e),
            });
        }
        let r = self.record;
        Ok(PromoteReport {
            env: self.env,
            release: Release {
                seq: r.seq,
                digest: r.digest,
                name: r.name,
                version: r.version,
                action: r.action,
                status: Status::Live,
                actor: r.actor,
                at: r.at,
                reason: r.reason,
                replaced: r.previous,
                schema_version: r.schema_version,
                backup_id: r.backup_id,
                deploy: r.deploy,
                rollouts: Vec::new(),
            },
            previous: r.previous,
            changed: true,
            location: self.location,
            source: self.source,
            bytes_copied: self.transfer.bytes_copied,
            bytes_verified: self.transfer.bytes_verified,
            server_side: self.transfer.server_side,
        })
    }
}

/// What a plan turned out to be.
pub enum Planned {
    /// Checks passed, artifact in place: commit to record it.
    Ready(Plan),
    /// The artifact is already live there; nothing to record.
    AlreadyLive(PromoteReport),
}

enum GateOrPlan {
    Planned(Box<Planned>),
    Checked(PromotionCheck),
}

/// What the gates of a promotion said ([`Promoter::check_promotion`]): it would go ahead.
#[derive(Debug, Clone, Serialize)]
pub struct PromotionCheck {
    pub env: String,
    pub digest: Digest,
    pub name: String,
    pub version: Option<String>,
    /// Already the live release: promoting would record nothing.
    pub already_live: bool,
    /// The live release's sequence number (already live), else the one it would get.
    pub seq: u64,
    /// What was live before it.
    pub previous: Option<Digest>,
}

/// `ferry releases --env ENV`; the JSON keys are the issue's contract.
#[derive(Debug, Clone, Serialize)]
pub struct Releases {
    pub env: String,
    pub live: Option<Release>,
    /// What `rollback` without `--to` would bring back: the newest earlier release of another
    /// digest that is not bad. Without rollbacks, the release live before the current one.
    pub previous: Option<Release>,
    /// Newest first.
    pub history: Vec<Release>,
}

/// `ferry artifact gc --keep N [--yes]`.
#[derive(Debug, Clone)]
pub struct GcRequest {
    /// How many of each environment's newest releases keep their artifacts (at least 1).
    pub keep: usize,
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
    pub now: DateTime<Utc>,
    /// Artifacts pushed more recently than this are kept even if no release refers to them
    /// yet: they may be about to be promoted. Default one day.
    pub min_age: chrono::Duration,
}

impl GcRequest {
    pub fn new(keep: usize, dry_run: bool, now: DateTime<Utc>) -> Self {
        GcRequest {
            keep,
            dry_run,
            now,
            min_age: chrono::Duration::days(1),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub keep: usize,
    pub dry_run: bool,
    /// Locations gc did not look at (OCI registries cannot list images by digest; use the
    /// registry's own garbage collection).
    pub skipped: Vec<String>,
    /// Every artifact kept because a release or a recent push needs it.
    pub kept: Vec<Digest>,
    /// What was removed (or, in a dry run, would be).
    pub removed: Vec<GcRemoval>,
    pub freed_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcRemoval {
    pub digest: Digest,
    pub location: String,
    pub size: u64,
}

/// Artifacts, environments and their release history, on a central store.
pub struct Promoter {
    central: Arc<dyn ObjectStore>,
    central_loc: Arc<dyn ArtifactLocation>,
    envs: BTreeMap<String, EnvSpec>,
    /// Each environment's `artifacts`, parsed once.
    locations: BTreeMap<String, LocationUrl>,
    options: StoreOptions,
    registry: RegistryOptions,
}

impl Promoter {
    /// `central` holds pushed artifacts and every environment's history; `options` are used
    /// to open the environments' locations.
    pub fn new(
        central: Arc<dyn ObjectStore>,
        envs: Vec<EnvSpec>,
        options: StoreOptions,
    ) -> Result<Self> {
        let envs: BTreeMap<String, EnvSpec> =
            envs.into_iter().map(|e| (e.name.clone(), e)).collect();
        let central_url = central.url();
        let mut locations = BTreeMap::new();
        for env in envs.values() {
            digest::check_name(&env.name).map_err(|reason| PromoteError::BadEnvConfig {
                env: env.name.clone(),
                reason,
            })?;
            locations.insert(
                env.name.clone(),
                LocationUrl::parse(env.artifacts.as_deref(), &central_url)?,
            );
        }
        for env in envs.values() {
            // A registry copies only from a registry, a store only from a store.
            if let Some(req) = env.requires.as_ref().and_then(|r| envs.get(r)) {
                let (mine, theirs) = (
                    locations[&env.name].is_registry(),
                    locations[&req.name].is_registry(),
                );
                if mine != theirs {
                    let kind = |oci| if oci { "an OCI registry" } else { "a store" };
                    return Err(PromoteError::BadEnvConfig {
                        env: env.name.clone(),
                        reason: format!(
                            "its artifacts are in {} but those of `{}`, which it requires, are in {}; every environment of a `requires` chain must use registries (oci://) or stores alike",
                            kind(mine),
                            req.name,
                            kind(theirs)
                        ),
                    });
                }
            }
            // `requires` must name a defined environment, and the chain must end.
            let mut seen = BTreeSet::from([env.name.as_str()]);
            let mut at = env;
            while let Some(req) = &at.requires {
                at = envs.get(req).ok_or_else(|| PromoteError::BadEnvConfig {
                    env: env.name.clone(),
                    reason: format!(
                        "requires = \"{req}\", which is not defined; add [env.{req}] or fix the name"
                    ),
                })?;
                if !seen.insert(req.as_str()) {
                    return Err(PromoteError::BadEnvConfig {
                        env: env.name.clone(),
                        reason: format!(
                            "its `requires` chain comes back to `{req}`; environments must form a line such as dev → staging → production"
                        ),
                    });
                }
            }
        }
        Ok(Promoter {
            central_loc: Arc::new(StoreLocation::new(central.clone())),
            central,
            envs,
            locations,
            options,
            registry: RegistryOptions::default(),
        })
    }

    /// How registries (`oci://` locations and image references) are reached and authenticated.
    pub fn with_registry_options(mut self, registry: RegistryOptions) -> Self {
        self.registry = registry;
        self
    }

    /// Every `[env.<name>]` of the configuration.
    pub fn from_config(
        central: Arc<dyn ObjectStore>,
        config: &ConfigFile,
        options: StoreOptions,
    ) -> Result<Self> {
        let envs = config
            .env
            .iter()
            .map(|(name, section)| EnvSpec::from_config(name, section))
            .collect::<Result<Vec<_>>>()?;
        Promoter::new(central, envs, options)
    }

    pub fn envs(&self) -> impl Iterator<Item = &EnvSpec> {
        self.envs.values()
    }

    fn env(&self, name: &str) -> Result<&EnvSpec> {
        self.envs.get(name).ok_or_else(|| PromoteError::UnknownEnv {
            env: name.to_string(),
            defined: if self.envs.is_empty() {
                "none".into()
            } else {
                self.envs.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })
    }

    /// The location of an environment's artifacts.
    pub async fn location(&self, env: &str) -> Result<Arc<dyn ArtifactLocation>> {
        let name = &self.env(env)?.name;
        match &self.locations[name] {
            LocationUrl::Central => Ok(self.central_loc.clone()),
            // `ferry.toml` expands `${VAR}` only in the selected environment; a location of
            // another one may still hold the reference, which is no place to copy to.
            LocationUrl::Unexpanded { url, .. } => Err(PromoteError::BadEnvConfig {
                env: env.to_string(),
                reason: format!(
                    "artifacts = \"{url}\" still contains a variable reference; load the configuration with this environment's variables expanded"
                ),
            }),
            LocationUrl::Registry(url) => Ok(Arc::new(OciLocation::open_parsed(
                url.clone(),
                Some(env),
                &self.registry,
            )?)),
            LocationUrl::Store(url) => open_location(url, &self.options).await,
        }
    }

    /// Stores a file under its digest and records its name and version.
    pub async fn push(&self, req: PushRequest) -> Result<PushReport> {
        let bad = |reason: String| PromoteError::BadReference {
            reference: format!("{}@{}", req.name, req.version),
            reason,
        };
        digest::check_name(&req.name).map_err(bad)?;
        digest::check_version(&req.version).map_err(bad)?;
        let (digest, size) = artifact::hash_file(&req.path).await?;
        let stored = match self.central_loc.size(&digest).await? {
            Some(_) => false,
            None => {
                artifact::upload_file(&req.path, &digest, self.central_loc.as_ref()).await?;
                true
            }
        };
        let record = artifact::record_version(
            &self.central,
            &VersionRecord {
                name: req.name.clone(),
                version: req.version.clone(),
                digest,
                size,
                pushed_at: req.now,
                pushed_by: req.actor.clone(),
            },
        )
        .await?;
        tracing::info!(%digest, size, stored, name = %req.name, version = %req.version, "artifact pushed");
        Ok(PushReport {
            reference: format!("{}@{digest}", req.name),
            name: req.name,
            version: req.version,
            digest,
            size,
            stored,
            pushed_at: record.pushed_at,
        })
    }

    /// Resolves `NAME@sha256:<hex>`, `sha256:<hex>`, `NAME@VERSION`, `NAME:VERSION`, or an
    /// image `REGISTRY/REPO@sha256:<hex>` / `REGISTRY/REPO:TAG`.
    pub async fn resolve(&self, reference: &str) -> Result<Artifact> {
        Ok(self.resolve_with_source(reference).await?.0)
    }

    /// Resolves a reference, with the repository an image reference names (where the first
    /// environment of a registry chain copies from).
    async fn resolve_with_source(
        &self,
        reference: &str,
    ) -> Result<(Artifact, Option<Arc<dyn ArtifactLocation>>)> {
        let parsed: Reference = reference.parse()?;
        let Reference::Image(image) = parsed else {
            let artifact =
                artifact::resolve(&self.central, self.central_loc.as_ref(), &parsed).await?;
            return Ok((artifact, None));
        };
        let repo = OciLocation::for_image(&image, &self.registry)?;
        let digest = match (image.digest, &image.tag) {
            (Some(d), _) => {
                if repo.size(&d).await?.is_none() {
                    return Err(PromoteError::NotFound {
                        what: format!("image {d} is not in {}", repo.url()),
                    });
                }
                d
            }
            (None, Some(tag)) => repo.resolve_tag(tag).await?,
            (None, None) => unreachable!("ImageRef has a tag or a digest"),
        };
        tracing::info!(reference, %digest, "image resolved");
        let artifact = Artifact {
            name: image.repo.clone(),
            version: Some(
                image
                    .tag
                    .clone()
                    .unwrap_or_else(|| digest.hex()[..12].to_string()),
            ),
            digest,
        };
        Ok((artifact, Some(Arc::new(repo))))
    }

    /// How to promote this release again (which re-applies a tag that failed to move).
    fn retry_command(location: &dyn ArtifactLocation, env: &str, digest: &Digest) -> String {
        match OciUrl::parse(&location.url()) {
            Ok(u) => format!("ferry promote {}/{}@{digest} --to {env}", u.host, u.repo),
            Err(_) => format!("ferry promote {digest} --to {env}"),
        }
    }

    /// Checks and copies, then records: [`Promoter::plan_promotion`] and [`Plan::commit`].
    pub async fn promote(&self, req: PromoteRequest) -> Result<PromoteReport> {
        match self.plan_promotion(req).await? {
            Planned::Ready(plan) => plan.commit().await,
            Planned::AlreadyLive(report) => Ok(report),
        }
    }

    /// Everything a promotion does except recording it: resolve, check `requires` and
    /// freezes, and put the verified artifact in the environment's location.
    pub async fn plan_promotion(&self, req: PromoteRequest) -> Result<Planned> {
        match self.gate_or_plan(req, false).await? {
            GateOrPlan::Planned(p) => Ok(*p),
            GateOrPlan::Checked(_) => unreachable!("a plan was asked for"),
        }
    }

    /// The gates of a promotion (resolve, `requires`, freeze) without copying, recording or
    /// moving anything: what a dry run reports. A refusal is the same error `plan_promotion`
    /// returns.
    pub async fn check_promotion(&self, req: PromoteRequest) -> Result<PromotionCheck> {
        match self.gate_or_plan(req, true).await? {
            GateOrPlan::Checked(c) => Ok(c),
            GateOrPlan::Planned(_) => unreachable!("only a check was asked for"),
        }
    }

    async fn gate_or_plan(&self, req: PromoteRequest, check_only: bool) -> Result<GateOrPlan> {
        let env = self.env(&req.to)?;
        let reason = req
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty());
        if req.override_freeze && reason.is_none() {
            return Err(PromoteError::Invalid(
                "--override-freeze needs --reason TEXT saying why; it is recorded in the release history".into(),
            ));
        }
        let location = self.location(&env.name).await?;
        let is_image = matches!(req.reference.parse()?, Reference::Image(_));
        match (is_image, location.is_registry()) {
            (true, false) => {
                return Err(PromoteError::KindMismatch(format!(
                    "{} is an image, but `{}` keeps its artifacts in the store {}; promote an artifact pushed with `ferry artifact push`, or give `{}` an oci:// location",
                    req.reference,
                    env.name,
                    location.url(),
                    env.name
                )));
            }
            (false, true) => {
                return Err(PromoteError::KindMismatch(format!(
                    "`{}` keeps its images in the OCI registry {}; name the image as REGISTRY/REPO@sha256:<hex> or REGISTRY/REPO:TAG, not `{}`",
                    env.name,
                    location.url(),
                    req.reference
                )));
            }
            _ => {}
        }
        let (artifact, image_source) = self.resolve_with_source(&req.reference).await?;
        let digest = artifact.digest;
        let history = History::read(&self.central, &env.name).await?;
        if let Some(live) = history.live().filter(|l| l.digest == digest)
            && check_only
        {
            return Ok(GateOrPlan::Checked(PromotionCheck {
                env: env.name.clone(),
                digest,
                name: artifact.name,
                version: artifact.version,
                already_live: true,
                seq: live.seq,
                previous: live.replaced,
            }));
        }
        if let Some(live) = history.live().filter(|l| l.digest == digest) {
            // Already recorded: make sure the location serves it (repairs a tag that did not
            // move after the record was written).
            location.make_live(&digest).await?;
            return Ok(GateOrPlan::Planned(Box::new(Planned::AlreadyLive(
                PromoteReport {
                    env: env.name.clone(),
                    release: live.clone(),
                    previous: live.replaced,
                    changed: false,
                    location: location.url(),
                    source: None,
                    bytes_copied: 0,
                    bytes_verified: 0,
                    server_side: false,
                },
            ))));
        }

        if let Some(required) = &env.requires {
            let there = History::read(&self.central, required).await?;
            match there.newest_of(&digest) {
                None => {
                    return Err(PromoteError::NotLiveInRequired {
                        digest,
                        env: env.name.clone(),
                        required: required.clone(),
                    });
                }
                Some(r) if r.status == Status::Bad => {
                    return Err(PromoteError::BadInRequired {
                        digest,
                        env: env.name.clone(),
                        required: required.clone(),
                        seq: r.seq,
                    });
                }
                Some(_) => {}
            }
        }

        let mut reason = reason.map(str::to_string);
        if let Some(window) = env.freeze.iter().find(|w| w.contains(req.now)) {
            if !req.override_freeze {
                return Err(PromoteError::Frozen {
                    env: env.name.clone(),
                    now: window.local_time(req.now),
                    window: window.to_string(),
                });
            }
            reason = Some(format!(
                "freeze override ({window}): {}",
                reason.unwrap_or_default()
            ));
            tracing::warn!(env = %env.name, %window, "promoting during a freeze window (override)");
        }
        if check_only {
            return Ok(GateOrPlan::Checked(PromotionCheck {
                env: env.name.clone(),
                digest,
                name: artifact.name,
                version: artifact.version,
                already_live: false,
                seq: history.next_seq(),
                previous: history.live().map(|l| l.digest),
            }));
        }

        let mut sources = Vec::new();
        if let Some(required) = &env.requires {
            sources.push(self.location(required).await?);
        }
        sources.push(image_source.unwrap_or_else(|| self.central_loc.clone()));
        let (source, transfer) = self.put_in_place(&digest, &location, &sources).await?;

        Ok(GateOrPlan::Planned(Box::new(Planned::Ready(Plan {
            central: self.central.clone(),
            env: env.name.clone(),
            record: Record {
                seq: history.next_seq(),
                digest,
                name: artifact.name,
                version: artifact.version,
                previous: history.live().map(|l| l.digest),
                action: Action::Promote,
                actor: req.actor,
                at: req.now,
                reason,
                schema_version: None,
                backup_id: None,
                deploy: None,
            },
            location: location.url(),
            retry: Self::retry_command(location.as_ref(), &env.name, &digest),
            dest: location,
            source,
            transfer,
        }))))
    }

    /// Makes the artifact present and verified at `dest`: re-hash it when it is there, else
    /// copy it from the first source that has it.
    async fn put_in_place(
        &self,
        digest: &Digest,
        dest: &Arc<dyn ArtifactLocation>,
        sources: &[Arc<dyn ArtifactLocation>],
    ) -> Result<(Option<String>, CopyOutcome)> {
        if dest.size(digest).await?.is_some() {
            let n = verify_at(dest.as_ref(), digest).await?;
            return Ok((
                None,
                CopyOutcome {
                    bytes_copied: 0,
                    bytes_verified: n,
                    server_side: false,
                },
            ));
        }
        for src in sources {
            if src.size(digest).await?.is_some() {
                let outcome = src.copy_to(digest, dest.as_ref()).await?;
                return Ok((Some(src.url()), outcome));
            }
        }
        Err(PromoteError::NotFound {
            what: format!(
                "artifact {digest} is not at {} and in none of [{}]",
                dest.url(),
                sources
                    .iter()
                    .map(|s| s.url())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// Makes an earlier release live again from the stored artifact, recorded as a
    /// `rollback`; the release it replaces becomes `bad`. Never blocked by a freeze.
    pub async fn rollback(&self, req: RollbackRequest) -> Result<PromoteReport> {
        self.plan_rollback(req).await?.commit().await
    }

    pub async fn plan_rollback(&self, req: RollbackRequest) -> Result<Plan> {
        let env = self.env(&req.env)?;
        let history = History::read(&self.central, &env.name).await?;
        let live = history.live().ok_or_else(|| {
            PromoteError::NothingToRollBack(format!(
                "`{}` has no releases, so there is nothing to roll back",
                env.name
            ))
        })?;
        let target = match &req.to {
            None => history.previous().ok_or_else(|| {
                PromoteError::NothingToRollBack(format!(
                    "`{}` has no earlier release of another artifact that is not bad; name one with --to SEQ|DIGEST|VERSION (see `ferry releases --env {}`)",
                    env.name, env.name
                ))
            })?,
            Some(to) => {
                let found = match to {
                    RollbackTarget::Seq(n) => history.releases.iter().find(|r| r.seq == *n),
                    RollbackTarget::Digest(d) => history.newest_of(d),
                    RollbackTarget::Version(v) => history
                        .releases
                        .iter()
                        .rev()
                        .find(|r| r.version.as_deref() == Some(v.as_str())),
                };
                found.ok_or_else(|| PromoteError::NotFound {
                    what: format!(
                        "`{}` has no release {}",
                        env.name,
                        match to {
                            RollbackTarget::Seq(n) => format!("with seq {n}"),
                            RollbackTarget::Digest(d) => format!("of {d}"),
                            RollbackTarget::Version(v) => format!("of version {v}"),
                        }
                    ),
                })?
            }
        };
        if target.digest == live.digest {
            return Err(PromoteError::NothingToRollBack(format!(
                "{} is already live in `{}` (release {}); choose another release with --to",
                target.digest, env.name, live.seq
            )));
        }
        if history.is_bad(&target.digest) {
            return Err(PromoteError::RollbackToBad {
                env: env.name.clone(),
                seq: target.seq,
                digest: target.digest,
            });
        }
        let location = self.location(&env.name).await?;
        // A registry environment rolls back to an image already in its repository (else its
        // required environment's); a store one to the central store's copy.
        let sources = if location.is_registry() {
            match &env.requires {
                Some(required) => vec![self.location(required).await?],
                None => Vec::new(),
            }
        } else {
            vec![self.central_loc.clone()]
        };
        let (source, transfer) = self
            .put_in_place(&target.digest, &location, &sources)
            .await?;
        Ok(Plan {
            central: self.central.clone(),
            env: env.name.clone(),
            record: Record {
                seq: history.next_seq(),
                digest: target.digest,
                name: target.name.clone(),
                version: target.version.clone(),
                previous: Some(live.digest),
                action: Action::Rollback,
                actor: req.actor,
                at: req.now,
                reason: req
                    .reason
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty()),
                // The schema a rollback brings back is the target's.
                schema_version: target.schema_version,
                backup_id: None,
                deploy: None,
            },
            location: location.url(),
            retry: Self::retry_command(location.as_ref(), &env.name, &target.digest),
            dest: location,
            source,
            transfer,
        })
    }

    /// What is live in an environment, what was before, and its history, newest first.
    pub async fn releases(&self, env: &str) -> Result<Releases> {
        let env = self.env(env)?;
        let history = History::read(&self.central, &env.name).await?;
        Ok(Releases {
            env: env.name.clone(),
            live: history.live().cloned(),
            previous: history.previous().cloned(),
            history: history.releases.iter().rev().cloned().collect(),
        })
    }

    /// Records a rollout of release `record.seq` of `env` to its hosts, beside the release
    /// record (`record.n` is assigned here). `releases` shows it with the release.
    pub async fn record_rollout(&self, env: &str, record: RolloutRecord) -> Result<RolloutRecord> {
        let env = self.env(env)?;
        History::append_rollout(&self.central, &env.name, record).await
    }

    /// Deletes the version records and index entries of a digest about to be removed.
    async fn forget_names(
        &self,
        digest: &Digest,
        versions: Option<&Vec<VersionRecord>>,
    ) -> Result<()> {
        let index_prefix = format!("{}{}/", artifact::INDEX_PREFIX, digest.hex());
        let index = self
            .central
            .list(&index_prefix)
            .await
            .map_err(PromoteError::store(format!(
                "listing {index_prefix} in {}",
                self.central.url()
            )))?;
        let keys = versions
            .into_iter()
            .flatten()
            .map(|v| artifact::version_key(&v.name, &v.version))
            .chain(index.into_iter().map(|m| m.key));
        for key in keys {
            self.central
                .delete(&key)
                .await
                .map_err(PromoteError::store(format!(
                    "deleting {key} from {}",
                    self.central.url()
                )))?;
        }
        Ok(())
    }

    /// Removes artifacts (in the central store and every environment's location) that no
    /// environment's last `keep` releases refer to and that were not pushed recently.
    pub async fn gc(&self, req: GcRequest) -> Result<GcReport> {
        if req.keep == 0 {
            return Err(PromoteError::Invalid(
                "--keep must be at least 1, so that what is live is never removed".into(),
            ));
        }
        // Every environment with a history, configured or not (a removed [env] section does
        // not make its releases fair game).
        let mut env_names: BTreeSet<String> = self.envs.keys().cloned().collect();
        let records =
            self.central
                .list(history::RELEASES_PREFIX)
                .await
                .map_err(PromoteError::store(format!(
                    "listing release histories in {}",
                    self.central.url()
                )))?;
        for m in &records {
            if let Some((env, _)) = m
                .key
                .strip_prefix(history::RELEASES_PREFIX)
                .and_then(|k| k.split_once('/'))
            {
                env_names.insert(env.to_string());
            }
        }
        let mut keep: BTreeSet<Digest> = BTreeSet::new();
        for env in &env_names {
            let h = History::read(&self.central, env).await?;
            keep.extend(h.releases.iter().rev().take(req.keep).map(|r| r.digest));
        }

        // Version records: which digests were pushed recently, and which records go with a
        // removed digest.
        let versions =
            self.central
                .list(artifact::VERSIONS_PREFIX)
                .await
                .map_err(PromoteError::store(format!(
                    "listing artifact versions in {}",
                    self.central.url()
                )))?;
        let mut records_of: BTreeMap<Digest, Vec<VersionRecord>> = BTreeMap::new();
        for m in versions {
            // A store error stops gc: skipping a record could remove a fresh push.
            let bytes = match self.central.get_bytes(&m.key).await {
                Ok(bytes) => bytes,
                Err(ferry_store::StoreError::NotFound { .. }) => continue,
                Err(e) => {
                    return Err(PromoteError::store(format!("reading {}", m.key))(e));
                }
            };
            let Ok(v) = serde_json::from_slice::<VersionRecord>(&bytes) else {
                continue; // unreadable: leave it for a human; it names no digest to keep
            };
            if req.now - v.pushed_at < req.min_age {
                keep.insert(v.digest);
            }
            records_of.entry(v.digest).or_default().push(v);
        }

        let mut locations: Vec<Arc<dyn ArtifactLocation>> = vec![self.central_loc.clone()];
        let mut urls = BTreeSet::from([self.central.url()]);
        let mut skipped = Vec::new();
        for env in self.envs.keys() {
            let loc = self.location(env).await?;
            if loc.is_registry() {
                tracing::info!(location = %loc.url(), "gc skips OCI registries");
                skipped.push(loc.url());
                continue;
            }
            if urls.insert(loc.url()) {
                locations.push(loc);
            }
        }

        let mut removed = Vec::new();
        // Environment locations first, the central store last: if gc stops half-way, what
        // remains can still be promoted again from the central store.
        for loc in locations.iter().rev() {
            for (digest, size) in loc.list().await? {
                if keep.contains(&digest) {
                    continue;
                }
                if !req.dry_run {
                    if Arc::ptr_eq(loc, &self.central_loc) {
                        // Names first, so no version ever points at missing bytes.
                        self.forget_names(&digest, records_of.get(&digest)).await?;
                    }
                    loc.delete(&digest).await?;
                }
                tracing::info!(%digest, location = %loc.url(), dry_run = req.dry_run, "artifact removed");
                removed.push(GcRemoval {
                    digest,
                    location: loc.url(),
                    size,
                });
            }
        }
        Ok(GcReport {
            keep: req.keep,
            dry_run: req.dry_run,
            skipped,
            kept: keep.into_iter().collect(),
            freed_bytes: removed.iter().map(|r| r.size).sum(),
            removed,
        })
    }
}
