//! `pre_deploy` / `post_deploy`: a shell command (`sh -c`) run in the directory of
//! `ferry.toml`, with the release in its environment (`FERRY_ENV`, `FERRY_ARTIFACT`,
//! `FERRY_VERSION`, `FERRY_DIGEST`, `FERRY_DEPLOY`, `FERRY_BACKUP_ID`). Its output is captured,
//! never printed: the tail goes into the step's detail. A hook that outlives its timeout is
//! killed and counts as failed.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// How a hook ended.
pub(crate) struct HookOutcome {
    pub ok: bool,
    /// The exit status (or what went wrong) and the tail of its output.
    pub detail: String,
}

/// Runs `command`; `vars` are added to its environment.
pub(crate) async fn run(
    command: &str,
    dir: &Path,
    vars: &[(&str, String)],
    timeout: Duration,
) -> HookOutcome {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return HookOutcome {
                ok: false,
                detail: format!("`{command}` could not be started in {}: {e}", dir.display()),
            };
        }
    };
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let read_all = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        // Both at once: a hook that fills one pipe while ferry waits on the other would hang.
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        (out, err)
    };
    let waited = tokio::time::timeout(timeout, async {
        let (out, err) = read_all.await;
        (child.wait().await, out, err)
    })
    .await;
    match waited {
        Err(_) => HookOutcome {
            ok: false,
            detail: format!("`{command}` did not finish within {timeout:?} and was killed"),
        },
        Ok((Err(e), _, _)) => HookOutcome {
            ok: false,
            detail: format!("`{command}`: {e}"),
        },
        Ok((Ok(status), out, err)) => {
            let tail = tail(&out, &err);
            let how = match status.code() {
                Some(0) => "exited 0".to_string(),
                Some(c) => format!("exited {c}"),
                None => "was killed by a signal".to_string(),
            };
            HookOutcome {
                ok: status.success(),
                detail: if tail.is_empty() {
                    format!("`{command}` {how}")
                } else {
                    format!("`{command}` {how}: {tail}")
                },
            }
        }
    }
}

/// The last few lines of a hook's output, joined, at most 400 characters.
fn tail(out: &[u8], err: &[u8]) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(out),
        String::from_utf8_lossy(err)
    );
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let last = lines[lines.len().saturating_sub(3)..].join(" | ");
    let chars: Vec<char> = last.chars().collect();
    if chars.len() > 400 {
        chars[chars.len() - 400..].iter().collect()
    } else {
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_status_output_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let ok = run(
            "echo \"$FERRY_VERSION\"",
            dir.path(),
            &[("FERRY_VERSION", "1.2.3".into())],
            Duration::from_secs(10),
        )
        .await;
        assert!(ok.ok && ok.detail.contains("1.2.3"), "{}", ok.detail);
        let bad = run(
            "echo nope >&2; exit 4",
            dir.path(),
            &[],
            Duration::from_secs(10),
        )
        .await;
        assert!(!bad.ok && bad.detail.contains("exited 4") && bad.detail.contains("nope"));
        let slow = run("sleep 5", dir.path(), &[], Duration::from_millis(200)).await;
        assert!(
            !slow.ok && slow.detail.contains("killed"),
            "{}",
            slow.detail
        );
    }
}
