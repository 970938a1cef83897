//! Registry references: `oci://HOST[:PORT]/REPO[:TAG]` locations ([`OciUrl`]) and image
//! references `HOST[:PORT]/REPO@sha256:<hex>` / `HOST[:PORT]/REPO:TAG` ([`ImageRef`]), with the
//! distribution spec's rules for hosts, repository paths and tags. Parsing only: no I/O.

use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{PromoteError, Result};

/// `oci://HOST[:PORT]/REPO[/…][:TAG]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciUrl {
    /// `HOST[:PORT]` as written.
    pub host: String,
    /// The repository path, e.g. `team/app-prod`.
    pub repo: String,
    pub tag: Option<String>,
}

impl OciUrl {
    pub const SCHEME: &str = "oci://";

    /// Whether `url` is written as an OCI location (whether or not it is a valid one).
    pub fn is_oci(url: &str) -> bool {
        url.starts_with(Self::SCHEME)
    }

    pub fn parse(url: &str) -> Result<Self> {
        let bad = |reason: &str| PromoteError::BadOciUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix(Self::SCHEME)
            .ok_or_else(|| bad("it must start with oci://"))?;
        let rest = rest.trim_end_matches('/');
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("write oci://HOST[:PORT]/REPOSITORY[:TAG]"))?;
        check_host(host).map_err(|r| bad(&r))?;
        let (repo, tag) = split_tag(path);
        check_repo(repo).map_err(|r| bad(&r))?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(|r| bad(&r))?;
        }
        Ok(OciUrl {
            host: host.to_string(),
            repo: repo.to_string(),
            tag: tag.map(str::to_string),
        })
    }
}

/// An image reference: `HOST[:PORT]/REPO@sha256:<hex>` or `HOST[:PORT]/REPO:TAG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub host: String,
    pub repo: String,
    pub tag: Option<String>,
    /// When given, it wins over the tag (as in `docker pull repo:tag@sha256:…`).
    pub digest: Option<Digest>,
}

/// True when `s` names an image in a registry: its first path component is a registry host
/// (contains `.` or `:`, or is `localhost`). Store references never contain `/`.
pub fn looks_like_image(s: &str) -> bool {
    match s.split_once('/') {
        Some((host, _)) => host.contains('.') || host.contains(':') || host == "localhost",
        None => false,
    }
}

impl FromStr for ImageRef {
    type Err = PromoteError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| PromoteError::BadReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        let (host, path) = s.split_once('/').ok_or_else(|| {
            bad("write REGISTRY/REPOSITORY@sha256:<hex> or REGISTRY/REPOSITORY:TAG")
        })?;
        check_host(host).map_err(|r| bad(&r))?;
        let (named, digest) = match path.split_once('@') {
            Some((named, digest)) => (named, Some(digest.parse::<Digest>()?)),
            None => (path, None),
        };
        let (repo, tag) = split_tag(named);
        check_repo(repo).map_err(|r| bad(&r))?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(|r| bad(&r))?;
        }
        if tag.is_none() && digest.is_none() {
            return Err(bad(
                "name the image by digest (REPOSITORY@sha256:<hex>) or by tag (REPOSITORY:TAG)",
            ));
        }
        Ok(ImageRef {
            host: host.to_string(),
            repo: repo.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

impl std::fmt::Display for OciUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}/{}", Self::SCHEME, self.host, self.repo)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.repo)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `repo:tag` → (`repo`, `tag`); a `:` before the last `/` is not a tag separator.
pub(super) fn split_tag(path: &str) -> (&str, Option<&str>) {
    let last = path.rfind('/').map_or(0, |i| i + 1);
    match path[last..].rfind(':') {
        Some(i) => (&path[..last + i], Some(&path[last + i + 1..])),
        None => (path, None),
    }
}

pub(super) fn check_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{host}` is not a registry host[:port]"))
    }
}

/// Repository paths per the distribution spec: lowercase components separated by `/`.
pub(super) fn check_repo(repo: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if repo.is_empty() || repo.len() > 255 || !repo.split('/').all(component_ok) {
        return Err(format!(
            "`{repo}` is not a repository path: use lowercase letters, digits and `._-`, components separated by `/`"
        ));
    }
    Ok(())
}

pub(super) fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{tag}` is not a tag: up to 128 letters, digits, `.`, `_`, `-`, not starting with `.` or `-`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = OciUrl::parse("oci://registry.example.com/app-prod").unwrap();
        assert_eq!(
            u,
            OciUrl {
                host: "registry.example.com".into(),
                repo: "app-prod".into(),
                tag: None
            }
        );
        let u = OciUrl::parse("oci://127.0.0.1:5000/team/app:live").unwrap();
        assert_eq!(u.host, "127.0.0.1:5000");
        assert_eq!(u.repo, "team/app");
        assert_eq!(u.tag.as_deref(), Some("live"));
        for bad in [
            "oci://host",
            "oci:///app",
            "oci://host/App",
            "oci://host/app:",
            "oci://host/app:-x",
            "oci://host//app",
            "s3://b/app",
            "oci://ho st/app",
        ] {
            assert!(OciUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_references_parse() {
        let d = Digest::of(b"manifest");
        let r: ImageRef = format!("127.0.0.1:5000/app-build@{d}").parse().unwrap();
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.repo, "app-build");
        assert_eq!((r.tag, r.digest), (None, Some(d)));
        let r: ImageRef = "registry.example.com/team/app:1.2.3".parse().unwrap();
        assert_eq!(r.repo, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1.2.3"));
        let r: ImageRef = format!("localhost/app:1.0@{d}").parse().unwrap();
        assert_eq!((r.tag.as_deref(), r.digest), (Some("1.0"), Some(d)));
        assert_eq!(r.to_string(), format!("localhost/app:1.0@{d}"));
        for bad in [
            "registry.example.com/app",
            "registry.example.com/app@sha256:12",
            "registry.example.com/APP:1",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
        assert!(looks_like_image("127.0.0.1:5000/app@sha256:00"));
        assert!(looks_like_image("localhost/app:1"));
        assert!(looks_like_image("registry.example.com/app:1"));
        assert!(!looks_like_image("app@1.2.3"));
        assert!(!looks_like_image("app:1.2.3"));
        assert!(!looks_like_image("team/app:1"));
        assert_eq!(split_tag("host/a/b:1"), ("host/a/b", Some("1")));
        assert_eq!(split_tag("a/b"), ("a/b", None));
    }
}
