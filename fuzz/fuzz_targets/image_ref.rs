//! ferry-promote's references: image references (`REGISTRY/REPO:TAG`, `…@sha256:<hex>`),
//! artifact references (`NAME@VERSION`, `NAME:VERSION`, `NAME@sha256:…`, `sha256:…`), digests
//! and `oci://` URLs.
//!
//! Invariants: no panic; whatever parses, displayed and parsed again, is the same value (and
//! displaying that gives the same text); an `oci://` URL rebuilt from its parts parses to the
//! same parts.
#![no_main]

use ferry_promote::{Digest, ImageRef, OciUrl, Reference};
use libfuzzer_sys::fuzz_target;

fn round_trip<T>(input: &str)
where
    T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    let Ok(value) = input.parse::<T>() else {
        return;
    };
    let shown = value.to_string();
    let again = match shown.parse::<T>() {
        Ok(v) => v,
        Err(_) => panic!("{input:?} parsed as {value:?}, shown as {shown:?}, which does not parse"),
    };
    assert_eq!(again, value, "{input:?} → {shown:?} → another value");
    assert_eq!(again.to_string(), shown, "display is not stable");
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    round_trip::<ImageRef>(s);
    round_trip::<Reference>(s);
    round_trip::<Digest>(s);
    if let Ok(url) = OciUrl::parse(s) {
        let rebuilt = match &url.tag {
            Some(tag) => format!("oci://{}/{}:{tag}", url.host, url.repo),
            None => format!("oci://{}/{}", url.host, url.repo),
        };
        let again = OciUrl::parse(&rebuilt)
            .unwrap_or_else(|e| panic!("{s:?} → {rebuilt:?} does not parse: {e}"));
        assert_eq!(again, url, "{s:?} → {rebuilt:?}");
    }
});
