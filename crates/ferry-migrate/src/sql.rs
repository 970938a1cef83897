//! Splitting a SQL script into statements, for the few places that must send them one by one
//! (PostgreSQL runs a multi-statement simple query as one implicit transaction, which a
//! `-- ferry:no-transaction` migration such as `CREATE INDEX CONCURRENTLY` must avoid).
//!
//! It understands quotes, `"identifiers"`, `$tag$` dollar quoting, `--` and nested `/* */`
//! comments. It does not parse SQL; a `;` inside any of those is not a separator.

/// Splits `script` at top-level semicolons; returns non-empty statements with their 1-based
/// starting line.
pub fn split_statements(script: &str) -> Vec<(usize, String)> {
    let bytes = script.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' | b'`' => {
                let q = bytes[i];
                i += 1;
                while i < bytes.len() {
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
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = block_comment_end(bytes, i),
            b'$' => {
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
                push(&mut out, script, start, i);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push(&mut out, script, start, bytes.len().min(script.len()));
    out
}

/// The index just past the (nested) `/* */` comment that starts at `i`, or the end of `bytes`
/// when it is never closed.
fn block_comment_end(bytes: &[u8], mut i: usize) -> usize {
    let mut depth = 1;
    i += 2;
    while i < bytes.len() && depth > 0 {
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
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

fn push(out: &mut Vec<(usize, String)>, script: &str, start: usize, end: usize) {
    let piece = &script[start..end];
    if only_comments(piece) {
        return;
    }
    let lead = piece.len() - piece.trim_start().len();
    let line = script[..start + lead].matches('\n').count() + 1;
    out.push((line, piece.trim().to_string()));
}

/// True when `sql` holds no statement: nothing but whitespace, comments and `;` (exactly when
/// [`split_statements`] finds nothing). A down script of `;` and comments would "roll back" by
/// doing nothing, so it counts as blank like an empty one.
pub fn is_blank(sql: &str) -> bool {
    split_statements(sql).is_empty()
}

/// True when a piece between separators holds nothing but whitespace and comments, read as the
/// splitter reads them (`/* */` nests, an unclosed comment runs to the end).
fn only_comments(piece: &str) -> bool {
    let mut s = piece.trim_start();
    loop {
        if s.is_empty() {
            return true;
        }
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.find('\n').map_or("", |n| &rest[n..]).trim_start();
        } else if s.starts_with("/*") {
            s = s[block_comment_end(s.as_bytes(), 0)..].trim_start();
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

    /// Found by fuzzing (fuzz/README.md): `is_blank` said a script of separators and comments
    /// held something, though the splitter finds no statement in it, so such a down script
    /// counted as reversible; and it did not nest comments as the splitter does.
    #[test]
    fn blank_exactly_when_there_is_no_statement() {
        for blank in [";", "-- only a comment\n;\n;  ;", " ; /* x; */ ;", "/* a /* b */ c */", "/* open"] {
            assert!(split_statements(blank).is_empty(), "{blank:?}");
            assert!(is_blank(blank), "{blank:?}");
        }
        for not_blank in ["; SELECT 1", "/* a /* b */ */ x", "-- c\nx;"] {
            assert!(!split_statements(not_blank).is_empty(), "{not_blank:?}");
            assert!(!is_blank(not_blank), "{not_blank:?}");
        }
    }
}
