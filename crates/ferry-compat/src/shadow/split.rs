//! How a long release is split between shadow databases that prove consecutive parts at once.

/// From this many new migrations on, the proof is split between shadow databases that run at
/// once (see [`split`]).
const PARALLEL_FROM: usize = 24;

/// Which new migrations (by index) each shadow database proves: one part per core, at most
/// three. The first proves the oldest part; each later one first brings its database to where
/// the parts before it end with one plain `up`, then proves its own. A part's migrations run
/// three times (up, down, replay) and the ones before it once more, so with all parts taking
/// equally long each part is 2/3 of the one before (two parts: 60 % and 40 %).
/// `parallel` sets the number of databases instead (1 to 4; `0` or `1` keeps the proof in one,
/// for a small shared server); the CLI takes it from `FERRY_COMPAT_PARALLEL`.
pub fn split(new: usize, parallel: Option<usize>) -> Vec<std::ops::Range<usize>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = parallel.unwrap_or(cores.min(3));
    let parts = if new < PARALLEL_FROM {
        1
    } else {
        wanted.clamp(1, 4) as i32
    };
    let first = new as f64 / (3.0 * (1.0 - (2.0f64 / 3.0).powi(parts)));
    let mut out = Vec::new();
    let mut start = 0;
    for k in 0..parts {
        let end = if k == parts - 1 {
            new
        } else {
            (start + (first * (2.0f64 / 3.0).powi(k)).round() as usize).min(new)
        };
        out.push(start..end);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_every_migration_once_oldest_largest() {
        for n in [0, 1, 23, 24, 30, 300] {
            let parts = split(n, None);
            assert_eq!(parts.first().map_or(0, |r| r.start), 0);
            assert_eq!(parts.last().map_or(0, |r| r.end), n);
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert!(w[0].len() >= w[1].len(), "{parts:?}");
            }
            if n < PARALLEL_FROM {
                assert_eq!(parts.len(), 1);
            }
        }
        for (asked, got) in [(Some(0), 1), (Some(1), 1), (Some(2), 2), (Some(9), 4)] {
            assert_eq!(split(300, asked).len(), got, "{asked:?}");
        }
        assert_eq!(split(23, Some(4)).len(), 1, "a short release stays in one");
    }
}
