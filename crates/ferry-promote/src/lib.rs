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
use std::sync::Arc;

use ferry_core::ConfigFile;
use ferry_store::{ObjectStore, StoreOptions};

mod artifact;
mod digest;
mod error;
pub mod freeze;
mod gc;
mod history;
mod location;
mod oci;
mod promote;
mod push;
mod releases;
mod rollback;

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

pub use gc::{GcRemoval, GcReport, GcRequest};
pub use promote::{DeployInfo, Plan, Planned, PromoteReport, PromoteRequest, PromotionCheck};
pub use push::{PushReport, PushRequest};
pub use releases::Releases;
pub use rollback::{RollbackRequest, RollbackTarget};

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
}
