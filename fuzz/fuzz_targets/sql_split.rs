//! `ferry_migrate::sql`: the statement splitter and `is_blank`.
//!
//! Invariants, beyond "no panic, no hang":
//! - every statement is non-empty, trimmed and not blank;
//! - the statements appear in the script in order, and what lies between them (and before the
//!   first and after the last) splits into nothing: only separators, whitespace and comments
//!   were dropped; each statement's line is the line of its first byte;
//! - splitting a statement's text again gives exactly that statement (a piece never hides a
//!   top-level `;`);
//! - `is_blank(s)` exactly when `s` has no statements (a down script of `;` and comments is as
//!   irreversible as an empty one).
//!
//! Each invariant is checked for both readings of a script: PostgreSQL/SQLite and MySQL.
#![no_main]

use ferry_core::Engine;
use ferry_migrate::sql::{is_blank, split_statements_for};
use libfuzzer_sys::fuzz_target;

fn line_of(script: &str, offset: usize) -> usize {
    script[..offset].matches('\n').count() + 1
}

fuzz_target!(|data: &[u8]| {
    let script = String::from_utf8_lossy(data);
    let script = script.as_ref();
    for engine in [Engine::Postgres, Engine::MySql] {
        check(script, engine);
    }
});

fn check(script: &str, engine: Engine) {
    let split_statements = |s: &str| split_statements_for(s, engine);
    let statements = split_statements(script);

    let mut cursor = 0;
    for (line, text) in &statements {
        assert!(!text.is_empty(), "empty statement from {script:?}");
        // SQL's whitespace is ASCII; a Unicode space belongs to the statement.
        assert_eq!(
            text.trim_matches(|c: char| c.is_ascii_whitespace()),
            text,
            "untrimmed statement from {script:?}"
        );
        // `is_blank` reads as PostgreSQL does (`--$$` is a comment there, not on MySQL).
        assert!(
            engine != Engine::Postgres || !is_blank(text),
            "blank statement {text:?} from {script:?}"
        );

        // Some occurrence of the text after the cursor, with only droppable text before it
        // that ends outside any comment or quote (a token after it would be a statement), and
        // the end of its piece after it.
        let found = script[cursor..]
            // Every occurrence, overlapping ones included: `match_indices` skips a match
            // that overlaps an earlier one, and the earlier one can be inside a comment.
            .char_indices()
            .filter(|(at, _)| script[cursor + at..].starts_with(text.as_str()))
            .find(|(at, _)| {
                let at = cursor + at;
                let gap = &script[cursor..at];
                split_statements(gap).is_empty()
                    && split_statements(&format!("{gap}x"))
                        .last()
                        .map(|(_, t)| t.as_str())
                        == Some("x")
                    && script[at + text.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| c == ';' || c.is_ascii_whitespace())
                    && line_of(script, at) == *line
            });
        let Some((at, _)) = found else {
            panic!(
                "statement {text:?} (line {line}) is not the next piece of {script:?} after \
                 offset {cursor}: statements {statements:?}"
            );
        };
        cursor += at + text.len();

        let again = split_statements(text);
        assert_eq!(
            again,
            vec![(1, text.clone())],
            "splitting statement {text:?} again differs (from {script:?})"
        );
    }
    assert!(
        split_statements(&script[cursor..]).is_empty(),
        "text after the last statement of {script:?} holds statements: {statements:?}"
    );

    if engine == Engine::Postgres {
        assert_eq!(
            is_blank(script),
            statements.is_empty(),
            "is_blank disagrees with the splitter on {script:?}: statements {statements:?}"
        );
    }
}
