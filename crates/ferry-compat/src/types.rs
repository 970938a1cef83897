//! Comparing an old and a new column type: same, a widening (every old value fits and reads
//! the same), or a narrowing/reinterpretation. Works on the type's text, lowercased, so it does
//! not depend on how a sqlparser release names its `DataType` variants.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Integer of this many bytes.
    Int(u8),
    Float(u8),
    /// Precision and scale; `None` precision is unbounded (PostgreSQL `numeric`).
    Decimal(Option<u64>, u64),
    /// Variable-length text; `None` is unbounded.
    Varchar(Option<u64>),
    Enum(Vec<String>),
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Same,
    /// Every old value fits; `rewrite` when PostgreSQL rewrites the table to do it.
    Widen {
        rewrite: bool,
    },
    /// MySQL enum values removed.
    EnumDrop(Vec<String>),
    Narrow,
}

fn normalize(t: &str) -> String {
    t.to_ascii_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" (", "(")
        .replace(", ", ",")
}

fn args(t: &str) -> Vec<u64> {
    t.find('(')
        .and_then(|open| t.rfind(')').map(|close| &t[open + 1..close]))
        .map(|inner| {
            inner
                .split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn base(t: &str) -> &str {
    t.split('(').next().unwrap_or(t).trim()
}

fn kind(raw: &str) -> Kind {
    let t = normalize(raw);
    let unsigned = t.contains("unsigned");
    let b = base(&t).trim_end_matches(" unsigned");
    let a = args(&t);
    let int = |n: u8| Kind::Int(if unsigned { n + 1 } else { n });
    match b {
        "tinyint" | "int1" => int(1),
        "smallint" | "int2" | "smallserial" | "serial2" => int(2),
        "mediumint" => int(3),
        "int" | "integer" | "int4" | "serial" | "serial4" => int(4),
        "bigint" | "int8" | "bigserial" | "serial8" => int(8),
        "real" | "float4" => Kind::Float(4),
        "float" if a.first().is_some_and(|p| *p <= 24) => Kind::Float(4),
        "double" | "double precision" | "float8" | "float" => Kind::Float(8),
        "numeric" | "decimal" | "dec" => match a.as_slice() {
            [] => Kind::Decimal(None, 0),
            [p] => Kind::Decimal(Some(*p), 0),
            [p, s, ..] => Kind::Decimal(Some(*p), *s),
        },
        "varchar" | "character varying" | "nvarchar" => Kind::Varchar(a.first().copied()),
        "text" | "clob" if a.is_empty() && b == "text" => Kind::Varchar(None),
        "tinytext" => Kind::Varchar(Some(255)),
        "mediumtext" => Kind::Varchar(Some(16_777_215)),
        "longtext" => Kind::Varchar(None),
        "enum" => Kind::Enum(
            t.find('(')
                .and_then(|o| t.rfind(')').map(|c| &t[o + 1..c]))
                .unwrap_or("")
                .split(',')
                .map(|v| v.trim().trim_matches('\'').to_string())
                .filter(|v| !v.is_empty())
                .collect(),
        ),
        _ => Kind::Other(t),
    }
}

/// How changing a column from `old` to `new` affects data the previous version wrote and reads.
pub fn compare(old: &str, new: &str) -> Change {
    let (o, n) = (kind(old), kind(new));
    if o == n {
        return Change::Same;
    }
    match (o, n) {
        (Kind::Int(a), Kind::Int(b)) if b >= a => Change::Widen { rewrite: true },
        (Kind::Float(a), Kind::Float(b)) if b >= a => Change::Widen { rewrite: true },
        (Kind::Varchar(a), Kind::Varchar(b)) => match (a, b) {
            (_, None) => Change::Widen { rewrite: false },
            (Some(a), Some(b)) if b >= a => Change::Widen { rewrite: false },
            _ => Change::Narrow,
        },
        (Kind::Decimal(p1, s1), Kind::Decimal(p2, s2)) => match (p1, p2) {
            (_, None) if s2 >= s1 => Change::Widen { rewrite: false },
            (Some(p1), Some(p2)) if s2 == s1 && p2 >= p1 => Change::Widen { rewrite: false },
            (Some(p1), Some(p2)) if s2 > s1 && p2 - s2 >= p1 - s1 => {
                Change::Widen { rewrite: true }
            }
            _ => Change::Narrow,
        },
        (Kind::Enum(a), Kind::Enum(b)) => {
            let dropped: Vec<String> = a.iter().filter(|v| !b.contains(v)).cloned().collect();
            if !dropped.is_empty() {
                Change::EnumDrop(dropped)
            } else if b.starts_with(&a) {
                Change::Widen { rewrite: false }
            } else {
                Change::Narrow
            }
        }
        _ => Change::Narrow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widenings_and_narrowings() {
        assert_eq!(
            compare("varchar(50)", "VARCHAR(100)"),
            Change::Widen { rewrite: false }
        );
        assert_eq!(
            compare("varchar(50)", "text"),
            Change::Widen { rewrite: false }
        );
        assert_eq!(compare("text", "varchar(10)"), Change::Narrow);
        assert_eq!(
            compare("integer", "bigint"),
            Change::Widen { rewrite: true }
        );
        assert_eq!(compare("bigint", "int"), Change::Narrow);
        assert_eq!(compare("INT", "integer"), Change::Same);
        assert_eq!(compare("integer", "text"), Change::Narrow);
        assert_eq!(
            compare("numeric(10,2)", "numeric(12,2)"),
            Change::Widen { rewrite: false }
        );
        assert_eq!(compare("numeric(10,2)", "numeric(10,3)"), Change::Narrow);
        assert_eq!(compare("timestamp", "timestamptz"), Change::Narrow);
        assert_eq!(
            compare("enum('a','b')", "enum('a','b','c')"),
            Change::Widen { rewrite: false }
        );
        assert_eq!(
            compare("enum('a','b','c')", "enum('a','c')"),
            Change::EnumDrop(vec!["b".into()])
        );
    }
}
