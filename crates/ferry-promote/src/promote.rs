//! A promotion: its gates, the verified copy into place, and the record written last
//! ([`Promoter::plan_promotion`], [`Plan::commit`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::digest::{Digest, Reference};
use crate::error::{PromoteError, Result};
use crate::history::{Action, History, Record, Release, Status};
use crate::location::{ArtifactLocation, CopyOutcome, verify_at};
use crate::{Artifact, Promoter};
use ferry_store::ObjectStore;

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
    pub(crate) central: Arc<dyn ObjectStore>,
    pub(crate) env: String,
    pub(crate) record: Record,
    pub(crate) location: String,
    /// The location itself, told to serve the release once it is recorded.
    pub(crate) dest: Arc<dyn ArtifactLocation>,
    /// The reference that re-applies the release if that fails.
    pub(crate) retry: String,
    pub(crate) source: Option<String>,
    pub(crate) transfer: CopyOutcome,
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

impl Promoter {
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
    pub(crate) async fn put_in_place(
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
}
