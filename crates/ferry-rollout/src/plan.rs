//! What a rollout will do, decided from the gathered state before anything is touched: which
//! hosts are skipped or already on the release, which one is the test bed, and the batches the
//! rest go out in (configuration order, `batch_size` hosts each). A dry run reports exactly
//! this, with every command filled in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The plan, as `--dry-run` shows it (and as every report carries it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    /// The host that goes first, alone, and soaks (none in a rollback).
    pub testbed: Option<String>,
    /// Hosts per batch, in order (the test bed's own batch not included).
    pub batches: Vec<Vec<String>>,
    /// The deploy command each planned host runs, placeholders filled in.
    pub commands: BTreeMap<String, String>,
    /// What every host said before anything happened.
    pub gathered: Vec<Gathered>,
}

/// One host's state before the rollout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Gathered {
    pub name: String,
    pub healthy: bool,
    /// What `version_url` reported (null without one, or when it did not answer).
    pub version: Option<String>,
    /// The load balancer's word for it (`UP`, `DRAIN`, `MAINT`, ...), null without one.
    pub load_balancer: Option<String>,
    /// `planned`, `skipped` or `unchanged`.
    pub decision: String,
    pub detail: Option<String>,
}

/// Splits `hosts` into batches of `len`.
pub fn batches(hosts: &[String], len: usize) -> Vec<Vec<String>> {
    hosts.chunks(len.max(1)).map(|c| c.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_order_and_the_last_may_be_short() {
        let h: Vec<String> = (1..=5).map(|i| format!("h{i}")).collect();
        assert_eq!(
            batches(&h, 2),
            vec![vec!["h1", "h2"], vec!["h3", "h4"], vec!["h5"]]
        );
        assert_eq!(batches(&h, 9).len(), 1);
        assert!(batches(&[], 2).is_empty());
    }
}
