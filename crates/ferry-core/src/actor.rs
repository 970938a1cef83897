//! Who is running ferry, for history records: the CI's user and job when a CI is detected,
//! otherwise `user@host`. `FERRY_ACTOR` overrides both.

/// Describes the current actor; `lookup` reads environment variables.
pub fn actor(lookup: &dyn Fn(&str) -> Option<String>) -> String {
    if let Some(a) = lookup("FERRY_ACTOR").filter(|a| !a.is_empty()) {
        return a;
    }
    let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
    if get("GITHUB_ACTIONS").is_some() {
        return format!(
            "{} (github {} run {})",
            get("GITHUB_ACTOR").unwrap_or_else(|| "unknown".into()),
            get("GITHUB_REPOSITORY").unwrap_or_default(),
            get("GITHUB_RUN_ID").unwrap_or_default()
        );
    }
    if get("GITLAB_CI").is_some() {
        return format!(
            "{} (gitlab job {})",
            get("GITLAB_USER_LOGIN").unwrap_or_else(|| "unknown".into()),
            get("CI_JOB_ID").unwrap_or_default()
        );
    }
    let user = get("USER")
        .or_else(|| get("USERNAME"))
        .unwrap_or_else(|| "unknown".into());
    let host = get("HOSTNAME")
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_and_local_actors() {
        let gh = |k: &str| match k {
            "GITHUB_ACTIONS" => Some("true".into()),
            "GITHUB_ACTOR" => Some("octo".into()),
            "GITHUB_REPOSITORY" => Some("acme/app".into()),
            "GITHUB_RUN_ID" => Some("42".into()),
            _ => None,
        };
        assert_eq!(actor(&gh), "octo (github acme/app run 42)");
        let local = |k: &str| match k {
            "USER" => Some("dba".into()),
            "HOSTNAME" => Some("db1".into()),
            _ => None,
        };
        assert_eq!(actor(&local), "dba@db1");
        assert_eq!(
            actor(&|k: &str| (k == "FERRY_ACTOR").then(|| "deploy-bot".into())),
            "deploy-bot"
        );
    }
}
