//! Splitting a SQL script into statements, for the few places that must send them one by one
//! (PostgreSQL runs a multi-statement simple query as one implicit transaction, which a
//! `-- ferry:no-transaction` migration such as `CREATE INDEX CONCURRENTLY` must avoid) or read
//! them one by one (`ferry compat check`).
//!
//! It understands quotes, `"identifiers"`, `$tag$` dollar quoting, `--` and nested `/* */`
//! comments, and on MySQL/MariaDB backslash escapes and `#` comments. It does not parse SQL; a
//! `;` inside any of those is not a separator.

use ferry_core::Engine;

/// Splits `script` at top-level semicolons, read as PostgreSQL (and SQLite) read it; returns
/// non-empty statements with their 1-based starting line.
pub fn split_statements(script: &str) -> Vec<(usize, String)> {
    split_statements_for(script, Engine::Postgres)
}

/// [`split_statements`] for a script written for `engine`. PostgreSQL and SQLite: `''` doubles
/// a quote, `E'…'` strings take backslash escapes, `$tag$` quotes (but a `$` inside a name such
/// as `a$b$` does not). MySQL/MariaDB: a backslash escapes the next character in `'…'` and
/// `"…"`, `#` starts a comment, `--` starts one only before whitespace, and `$` quotes nothing.
pub fn split_statements_for(script: &str, engine: Engine) -> Vec<(usize, String)> {
    let mysql = engine == Engine::MySql;
    let bytes = script.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' | b'`' => {
                let q = bytes[i];
                let escapes = q != b'`' && (mysql || (q == b'\'' && is_escape_string(bytes, i)));
                i += 1;
                while i < bytes.len() {
                    if escapes && bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if bytes[i] == q {
                        if bytes.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') && (!mysql || dash_comment_mysql(bytes, i)) => {
                i = line_end(bytes, i);
            }
            b'#' if mysql => i = line_end(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = block_comment_end(bytes, i, mysql),
            b'$' if !(mysql || i > 0 && is_ident_byte(bytes[i - 1])) => {
                // $tag$ ... $tag$ where tag is empty or an identifier not starting with a digit.
                let tag_end = script[i + 1..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map(|n| i + 1 + n);
                match tag_end {
                    Some(e)
                        if bytes[e] == b'$'
                            && !bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit()) =>
                    {
                        let tag = &script[i..=e];
                        match script[e + 1..].find(tag) {
                            Some(close) => i = e + 1 + close + tag.len(),
                            None => i = bytes.len(),
                        }
                    }
                    _ => i += 1,
                }
            }
            b';' => {
                push(&mut out, script, start, i, mysql);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push(
        &mut out,
        script,
        start,
        bytes.len().min(script.len()),
        mysql,
    );
    out
}

/// A byte that may continue an identifier (PostgreSQL: letters, digits, `_`, `$`, non-ASCII).
fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// `E'…'` (PostgreSQL's escape string): the quote at `i` follows an `E` that starts a token.
fn is_escape_string(bytes: &[u8], i: usize) -> bool {
    i > 0 && matches!(bytes[i - 1], b'E' | b'e') && !(i > 1 && is_ident_byte(bytes[i - 2]))
}

/// MySQL reads `--` as a comment only when whitespace or a control character (or the end)
/// follows it; `1--1` is one minus minus one.
fn dash_comment_mysql(bytes: &[u8], i: usize) -> bool {
    bytes
        .get(i + 2)
        .is_none_or(|b| b.is_ascii_whitespace() || b.is_ascii_control())
}

/// The index of the `\n` ending the line comment that starts at `i`, or the end of `bytes`.
fn line_end(bytes: &[u8], i: usize) -> usize {
    bytes[i..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |n| i + n)
}

/// The index just past the `/* */` comment that starts at `i` (nested on PostgreSQL and SQLite,
/// not on MySQL), or the end of `bytes` when it is never closed.
fn block_comment_end(bytes: &[u8], mut i: usize, mysql: bool) -> usize {
    let mut depth = 1;
    i += 2;
    while i < bytes.len() && depth > 0 {
        if !mysql && bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    i.min(bytes.len())
}

fn push(out: &mut Vec<(usize, String)>, script: &str, start: usize, end: usize, mysql: bool) {
    let piece = &script[start..end];
    if only_comments(piece, mysql) {
        return;
    }
    let lead = piece.len() - trim_start(piece).len();
    let line = script[..start + lead].matches('\n').count() + 1;
    out.push((
        line,
        trim_start(piece).trim_end_matches(is_space).to_string(),
    ));
}

/// SQL's whitespace is ASCII (space, tab, newline, carriage return, form feed): a no-break
/// space or another Unicode space is part of a token, not around it, so trimming it would
/// change a statement (on MySQL, `--` followed by U+00A0 is not a comment, but `--` is).
fn is_space(c: char) -> bool {
    c.is_ascii_whitespace()
}

fn trim_start(s: &str) -> &str {
    s.trim_start_matches(is_space)
}

/// True when `sql` holds no statement: nothing but whitespace, comments and `;` (exactly when
/// [`split_statements`] finds nothing). A down script of `;` and comments would "roll back" by
/// doing nothing, so it counts as blank like an empty one.
pub fn is_blank(sql: &str) -> bool {
    split_statements(sql).is_empty()
}

/// True when a piece between separators holds nothing but whitespace and comments, read as the
/// splitter reads them (`/* */` nests, an unclosed comment runs to the end).
fn only_comments(piece: &str, mysql: bool) -> bool {
    let mut s = trim_start(piece);
    loop {
        let b = s.as_bytes();
        if b.is_empty() {
            return true;
        }
        if b.starts_with(b"--") && (!mysql || dash_comment_mysql(b, 0)) || (mysql && b[0] == b'#') {
            s = trim_start(&s[line_end(b, 0)..]);
        } else if b.starts_with(b"/*") {
            s = trim_start(&s[block_comment_end(b, 0, mysql)..]);
        } else {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<String> {
        split_statements(s).into_iter().map(|(_, t)| t).collect()
    }

    /// Found by fuzzing (`sql_split`): `"--\u{a0}\r"` on MySQL is a statement (`--` needs
    /// ASCII whitespace after it to be a comment), and trimming the no-break space made it
    /// `--`, which split again is a comment: a statement that was not itself.
    #[test]
    fn only_ascii_whitespace_is_trimmed() {
        let mysql = |s: &str| -> Vec<String> {
            split_statements_for(s, Engine::MySql)
                .into_iter()
                .map(|(_, t)| t)
                .collect()
        };
        assert_eq!(mysql("--\u{a0}\r"), ["--\u{a0}"]);
        assert_eq!(mysql("--\u{a0}"), ["--\u{a0}"]);
        assert_eq!(texts(" \u{a0}SELECT 1\u{a0} ;"), ["\u{a0}SELECT 1\u{a0}"]);
        for s in ["--\u{a0}\r", " \u{a0}SELECT 1\u{a0} ;"] {
            for t in mysql(s) {
                assert_eq!(mysql(&t), std::slice::from_ref(&t), "{t:?} split again");
            }
        }
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let script = "CREATE TABLE a (x text default ';');\n-- a comment; with a semicolon\n\
                      INSERT INTO a VALUES ('it''s; fine');\n/* block; /* nested; */ */\n\
                      CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n\
                      SELECT $$;$$;\nSELECT \"we;ird\" FROM a";
        assert_eq!(
            texts(script),
            vec![
                "CREATE TABLE a (x text default ';')",
                "-- a comment; with a semicolon\nINSERT INTO a VALUES ('it''s; fine')",
                "/* block; /* nested; */ */\nCREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql",
                "SELECT $$;$$",
                "SELECT \"we;ird\" FROM a",
            ]
        );
    }

    #[test]
    fn reports_starting_lines_and_drops_blank_pieces() {
        let parts = split_statements("\n\nSELECT 1;\n-- only a comment\n;\n  SELECT 2;");
        assert_eq!(
            parts,
            vec![(3, "SELECT 1".to_string()), (6, "SELECT 2".to_string())]
        );
    }

    #[test]
    fn positional_parameters_are_not_dollar_quotes() {
        assert_eq!(texts("SELECT $1; SELECT 2"), vec!["SELECT $1", "SELECT 2"]);
    }

    #[test]
    fn blankness() {
        assert!(is_blank("  -- nothing\n/* here */\n"));
        assert!(!is_blank("-- c\nDROP TABLE x;"));
    }

    fn mysql(s: &str) -> Vec<String> {
        split_statements_for(s, Engine::MySql)
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Found while writing the `sql_split` fuzz target's invariants (fuzz/README.md): the one
    /// splitter read every script as PostgreSQL, so `ferry compat check` cut MySQL statements
    /// with a backslash-escaped quote, or a `#` comment holding a `;`, into unparseable pieces.
    #[test]
    fn mysql_backslash_escapes_and_hash_comments() {
        let script = "INSERT INTO t VALUES ('it\\'s; fine', \"a\\\"; b\");\n\
                      # a comment; with a semicolon\nSELECT `x\\`;\nSELECT 1--1;\n\
                      -- real comment;\nSELECT a$b$c FROM t; /* a /* b */ SELECT 2";
        assert_eq!(
            mysql(script),
            vec![
                "INSERT INTO t VALUES ('it\\'s; fine', \"a\\\"; b\")",
                "# a comment; with a semicolon\nSELECT `x\\`",
                "SELECT 1--1",
                "-- real comment;\nSELECT a$b$c FROM t",
                "/* a /* b */ SELECT 2",
            ]
        );
        assert!(mysql("# only a comment;\n;").is_empty());
        // PostgreSQL reads the same backslash literally (standard_conforming_strings).
        assert_eq!(
            texts("SELECT 'C:\\'; SELECT 2"),
            vec!["SELECT 'C:\\'", "SELECT 2"]
        );
    }

    /// Found while writing the `sql_split` fuzz target: `E'\''` (an escaped quote in a
    /// PostgreSQL escape string) swallowed the rest of the script, and so did a `$` inside a
    /// name, which PostgreSQL allows (`a$b$`), taken for a dollar quote.
    #[test]
    fn postgres_escape_strings_and_dollars_inside_names() {
        assert_eq!(
            texts("SELECT E'\\'; x'; SELECT e'\\\\'; SELECT 2"),
            vec!["SELECT E'\\'; x'", "SELECT e'\\\\'", "SELECT 2"]
        );
        assert_eq!(
            texts("SELECT 'a\\'; SELECT 2"),
            vec!["SELECT 'a\\'", "SELECT 2"]
        );
        assert_eq!(texts("SELECT fe'x;'"), vec!["SELECT fe'x;'"]);
        assert_eq!(
            texts("CREATE TABLE a$b$ (x int); CREATE TABLE c$b$ (y int)"),
            vec!["CREATE TABLE a$b$ (x int)", "CREATE TABLE c$b$ (y int)"]
        );
        assert_eq!(
            texts("SELECT $b$;$b$; SELECT 2"),
            vec!["SELECT $b$;$b$", "SELECT 2"]
        );
    }

    /// Found by fuzzing (fuzz/README.md): `is_blank` said a script of separators and comments
    /// held something, though the splitter finds no statement in it, so such a down script
    /// counted as reversible; and it did not nest comments as the splitter does.
    #[test]
    fn blank_exactly_when_there_is_no_statement() {
        for blank in [
            ";",
            "-- only a comment\n;\n;  ;",
            " ; /* x; */ ;",
            "/* a /* b */ c */",
            "/* open",
        ] {
            assert!(split_statements(blank).is_empty(), "{blank:?}");
            assert!(is_blank(blank), "{blank:?}");
        }
        for not_blank in ["; SELECT 1", "/* a /* b */ */ x", "-- c\nx;"] {
            assert!(!split_statements(not_blank).is_empty(), "{not_blank:?}");
            assert!(!is_blank(not_blank), "{not_blank:?}");
        }
    }
}
