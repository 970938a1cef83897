//! A rollback: an earlier release made live again from the stored artifact, never blocked by
//! a freeze.

use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::digest::{self, Digest};
use crate::error::{PromoteError, Result};
use crate::history::{Action, History, Record};
use crate::{Plan, PromoteReport, Promoter};

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

impl Promoter {
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
}
