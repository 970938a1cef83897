//! `[git] tag = true`: after a successful deploy, the commit checked out where ferry runs
//! (`HEAD` of the repository around `ferry.toml`) is tagged with the release version, and the
//! lightweight tags `live` and `last_live` move (`last_live` to where `live` was), so the code
//! that runs is one `git checkout live` away. Uses the `git` command; a directory that is not a
//! repository, or a version tag that already names another commit, is reported, never forced.

use std::path::Path;

async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Tags `HEAD` in the repository around `dir`; returns what it did.
pub(crate) async fn tag_release(dir: &Path, version: &str) -> Result<String, String> {
    let head = git(dir, &["rev-parse", "--verify", "HEAD^{commit}"])
        .await
        .map_err(|e| {
            format!(
                "{} is not in a git repository with a commit ({e})",
                dir.display()
            )
        })?;
    let short = &head[..head.len().min(12)];
    let mut done = Vec::new();
    match git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/tags/{version}^{{commit}}"),
        ],
    )
    .await
    {
        Ok(existing) if existing == head => done.push(format!("tag {version} already on {short}")),
        Ok(existing) => {
            return Err(format!(
                "tag {version} already names commit {}, not the deployed {short}; left as it is (move it by hand if the release was rebuilt)",
                &existing[..existing.len().min(12)]
            ));
        }
        Err(_) => {
            git(dir, &["tag", version, &head]).await?;
            done.push(format!("tagged {short} as {version}"));
        }
    }
    if let Ok(previous) = git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "refs/tags/live^{commit}",
        ],
    )
    .await
    {
        git(dir, &["tag", "-f", "last_live", &previous]).await?;
    }
    git(dir, &["tag", "-f", "live", &head]).await?;
    done.push("moved live (and last_live)".into());
    Ok(done.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tags_and_moves_live() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        if git(d, &["--version"]).await.is_err() {
            panic!("git is needed for this test: apt-get install git");
        }
        for args in [
            vec!["init", "-q"],
            vec![
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@e",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "one",
            ],
        ] {
            git(d, &args).await.unwrap();
        }
        let one = git(d, &["rev-parse", "HEAD"]).await.unwrap();
        tag_release(d, "1.0.0").await.unwrap();
        git(
            d,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@e",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "two",
            ],
        )
        .await
        .unwrap();
        let two = git(d, &["rev-parse", "HEAD"]).await.unwrap();
        tag_release(d, "1.1.0").await.unwrap();
        assert_eq!(git(d, &["rev-parse", "live^{commit}"]).await.unwrap(), two);
        assert_eq!(
            git(d, &["rev-parse", "last_live^{commit}"]).await.unwrap(),
            one
        );
        assert_eq!(git(d, &["rev-parse", "1.0.0^{commit}"]).await.unwrap(), one);
        // A version tag on another commit is never moved.
        let e = tag_release(d, "1.0.0").await.unwrap_err();
        assert!(e.contains("already names commit"), "{e}");
        let not_repo = tempfile::tempdir().unwrap();
        assert!(tag_release(not_repo.path(), "1").await.is_err());
    }
}
