//! Runs a command for a host: the template from `ferry.toml` with `{host}`, `{version}`,
//! `{digest}`, `{name}`, `{env}` and `{undeploy}` filled in, each value shell-quoted, through
//! `sh -c`. Keeps the exit status and the last lines of its output (stdout and stderr
//! interleaved as they arrive), never all of it, so memory does not grow with chatty scripts.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Lines of output kept for the report.
pub const TAIL_LINES: usize = 10;
const LINE_MAX: usize = 400;

/// The values placeholders are filled with.
#[derive(Debug, Clone, Default)]
pub struct Placeholders<'a> {
    pub host: &'a str,
    pub version: &'a str,
    pub digest: &'a str,
    pub name: &'a str,
    pub env: &'a str,
    /// In a rollback: the version being taken off (else empty).
    pub undeploy: &'a str,
}

/// Quotes a value for `sh` when it holds anything but safe characters.
pub fn shell_quote(v: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !v.is_empty() && v.chars().all(safe) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', r#"'\''"#))
    }
}

/// Fills `{host}` … `{undeploy}` in; other braces are left as they are.
pub fn fill(template: &str, p: &Placeholders<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let value = after.find('}').and_then(|end| {
            let v = match &after[..end] {
                "host" => p.host,
                "version" => p.version,
                "digest" => p.digest,
                "name" => p.name,
                "env" => p.env,
                "undeploy" => p.undeploy,
                _ => return None,
            };
            Some((v, end))
        });
        match value {
            Some((v, end)) => {
                out.push_str(&shell_quote(v));
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// How a command ended.
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    pub success: bool,
    /// `exit status 3`, `killed by signal 9`, or why it could not start.
    pub status: String,
    pub tail: Vec<String>,
}

impl CommandOutcome {
    /// `exited with status 3; last output: …`
    pub fn describe(&self) -> String {
        if self.tail.is_empty() {
            format!("{} (no output)", self.status)
        } else {
            format!("{}; last output: {}", self.status, self.tail.join(" | "))
        }
    }
}

/// Runs `command` with `sh -c`; output is kept only as its last [`TAIL_LINES`] lines.
pub async fn run(command: &str) -> CommandOutcome {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Starting a process holds the calling thread until the child has exec'd `sh` (about a
    // millisecond). On the blocking pool, the commands of a batch start side by side instead
    // of one after another on the runtime's thread.
    let child = match tokio::task::spawn_blocking(move || cmd.spawn()).await {
        Ok(r) => r,
        Err(e) => Err(std::io::Error::other(e)),
    };
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return CommandOutcome {
                success: false,
                status: format!("could not start `sh -c`: {e}"),
                tail: Vec::new(),
            };
        }
    };
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let out = child.stdout.take().map(|s| keep_tail(s, tail.clone()));
    let err = child.stderr.take().map(|s| keep_tail(s, tail.clone()));
    let (status, _, _) = tokio::join!(
        child.wait(),
        async {
            if let Some(f) = out {
                f.await
            }
        },
        async {
            if let Some(f) = err {
                f.await
            }
        }
    );
    let tail: Vec<String> = tail
        .lock()
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default();
    match status {
        Ok(s) if s.success() => CommandOutcome {
            success: true,
            status: "exit status 0".into(),
            tail,
        },
        Ok(s) => CommandOutcome {
            success: false,
            status: match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                (Some(c), _) => format!("exited with status {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => format!("ended with {s}"),
            },
            tail,
        },
        Err(e) => CommandOutcome {
            success: false,
            status: format!("could not wait for it: {e}"),
            tail,
        },
    }
}

async fn keep_tail<R: AsyncRead + Unpin>(r: R, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let mut line: String = line.chars().take(LINE_MAX).collect();
        if line.len() < buf.len().saturating_sub(1) && line.chars().count() == LINE_MAX {
            line.push('…');
        }
        if let Ok(mut t) = tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_quoted() {
        let p = Placeholders {
            host: "h1",
            version: "1.2.0",
            digest: "sha256:ab",
            name: "my app",
            env: "prod",
            undeploy: "",
        };
        assert_eq!(
            fill(
                "./deploy.sh {host} {version} {digest} {name} {env} {other} {undeploy}",
                &p
            ),
            "./deploy.sh h1 1.2.0 sha256:ab 'my app' prod {other} ''"
        );
        assert_eq!(shell_quote("it's; rm -rf /"), r#"'it'\''s; rm -rf /'"#);
        // Inside a single-quoted `sh -c '...'` a safe value stays one word.
        assert_eq!(
            fill("sh -c 'echo {version} > /tmp/v'", &p),
            "sh -c 'echo 1.2.0 > /tmp/v'"
        );
    }

    #[tokio::test]
    async fn keeps_the_status_and_the_last_lines() {
        let o = run("for i in $(seq 1 50); do echo line $i; done; exit 3").await;
        assert!(!o.success);
        assert_eq!(o.status, "exited with status 3");
        assert_eq!(o.tail.len(), TAIL_LINES);
        assert!(o.tail.contains(&"line 50".to_string()));
        assert!(!o.tail.contains(&"line 1".to_string()));
        assert!(run("true").await.success);
        let o = run("echo oops >&2; kill -9 $$").await;
        assert_eq!(o.status, "killed by signal 9");
        assert_eq!(o.tail, ["oops"]);
    }
}
