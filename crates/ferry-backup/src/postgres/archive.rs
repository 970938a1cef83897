//! `pg_dump`'s custom archive format (`-Fc`), read only as far as a parallel restore needs:
//! the header and table of contents (kept byte for byte, so `pg_restore` can read them from a
//! small file), then the data blocks one by one, each a table's rows as `COPY` text.
//!
//! The layout is PostgreSQL's `pg_backup_archiver.c` (`ReadHead`, `ReadToc`) and
//! `pg_backup_custom.c` (`_readBlockHeader`, chunks of `ReadInt` length, a zero length ending a
//! block). An integer is a sign byte and `int_size` little-endian bytes; a string is an integer
//! length (negative: NULL) and its bytes. Archive versions 1.12 to 1.16 (pg_dump 11 to 17) are
//! read; any other version is [`Head::toc`] `None`, and the caller restores the archive with
//! `pg_restore` as a whole. Nothing here runs SQL or knows a database.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Archive versions, as `pg_backup_archiver.h` numbers them.
const fn vers(major: u8, minor: u8) -> (u8, u8) {
    (major, minor)
}
const OLDEST: (u8, u8) = vers(1, 12);
const NEWEST: (u8, u8) = vers(1, 16);

/// Block types of the custom format.
const BLK_DATA: u8 = 1;

/// Sections, as `pg_backup.h` numbers them.
pub(crate) const SECTION_NONE: i64 = 1;
pub(crate) const SECTION_DATA: i64 = 3;
pub(crate) const SECTION_POST_DATA: i64 = 4;

/// One entry of the table of contents.
#[derive(Debug, Clone)]
pub(crate) struct TocEntry {
    pub dump_id: i64,
    /// `TABLE DATA`, `SEQUENCE SET`, `INDEX`, `BLOBS`, …
    pub desc: String,
    /// The section this entry restores in: its own, or (for `SECTION_NONE` entries such as
    /// comments and ACLs) that of the entry before it, as `pg_restore --section` decides.
    pub section: i64,
    pub defn: String,
    /// `COPY public.t (a, b) FROM stdin;` for table data.
    pub copy_stmt: String,
    /// Schema and name of the object, for messages.
    pub namespace: String,
    pub tag: String,
    /// The tablespace the object is created in (empty: the database's default).
    pub tablespace: String,
}

/// The header and table of contents of an archive.
pub(crate) struct Toc {
    pub entries: Vec<TocEntry>,
    /// Whether the data blocks are compressed (ferry dumps with `-Z0`; an archive made
    /// otherwise is restored by `pg_restore` as a whole).
    pub compressed: bool,
    /// Bytes of an integer in this archive (4 on every platform PostgreSQL supports).
    pub int_size: usize,
}

/// What was read before the data blocks.
pub(crate) struct Head {
    /// Every byte read so far: the header and table of contents, a complete archive without
    /// data for `pg_restore` (or, when `toc` is `None`, the start of the archive).
    pub bytes: Vec<u8>,
    /// `None` when the archive's version is not one this module reads.
    pub toc: Option<Toc>,
}

/// A table's data block: its dump id, then [`Blocks::next_chunk`] until `None`.
pub(crate) enum Block {
    Data {
        dump_id: i64,
    },
    /// A block of another type (large objects): not read here.
    Other {
        kind: u8,
    },
}

struct Reader<'r, R> {
    inner: &'r mut R,
    int_size: usize,
    off_size: usize,
    record: Option<Vec<u8>>,
}

fn bad(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

impl<R: AsyncRead + Unpin> Reader<'_, R> {
    async fn bytes(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        self.inner.read_exact(&mut buf).await?;
        if let Some(r) = &mut self.record {
            r.extend_from_slice(&buf);
        }
        Ok(buf)
    }

    async fn byte(&mut self) -> std::io::Result<u8> {
        Ok(self.bytes(1).await?[0])
    }

    async fn int(&mut self) -> std::io::Result<i64> {
        // On the stack: a data block has one of these per row chunk.
        let mut raw = [0u8; 9];
        let raw = &mut raw[..1 + self.int_size];
        self.inner.read_exact(raw).await?;
        if let Some(r) = &mut self.record {
            r.extend_from_slice(raw);
        }
        let mut value: i64 = 0;
        for (i, b) in raw[1..].iter().enumerate() {
            value |= i64::from(*b) << (8 * i);
        }
        Ok(if raw[0] == 0 { value } else { -value })
    }

    async fn string(&mut self) -> std::io::Result<Option<String>> {
        let len = self.int().await?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| bad("a string length is out of range"))?;
        if len > 1 << 30 {
            return Err(bad(format!(
                "a string of {len} bytes in the table of contents"
            )));
        }
        let raw = self.bytes(len).await?;
        String::from_utf8(raw)
            .map(Some)
            .map_err(|_| bad("a table-of-contents string is not UTF-8"))
    }

    async fn text(&mut self) -> std::io::Result<String> {
        Ok(self.string().await?.unwrap_or_default())
    }
}

/// Reads the header and table of contents from `input`, leaving it at the first data block.
pub(crate) async fn read_head<R: AsyncRead + Unpin>(input: &mut R) -> std::io::Result<Head> {
    let mut r = Reader {
        inner: input,
        int_size: 4,
        off_size: 8,
        record: Some(Vec::new()),
    };
    let magic = r.bytes(5).await?;
    if magic != b"PGDMP" {
        return Err(bad("it is not a pg_dump custom-format archive"));
    }
    let (major, minor, _rev) = (r.byte().await?, r.byte().await?, r.byte().await?);
    let version = (major, minor);
    if !(OLDEST..=NEWEST).contains(&version) {
        return Ok(Head {
            bytes: r.record.take().unwrap_or_default(),
            toc: None,
        });
    }
    r.int_size = usize::from(r.byte().await?);
    r.off_size = usize::from(r.byte().await?);
    if !(1..=8).contains(&r.int_size) || !(1..=8).contains(&r.off_size) {
        return Err(bad("the archive header has impossible integer sizes"));
    }
    let format = r.byte().await?;
    if format != 1 {
        return Err(bad(format!(
            "archive format {format} is not the custom format"
        )));
    }
    // Compression of the data blocks: an algorithm (0 = none) from 1.15 on, a level before.
    let compression = if version >= vers(1, 15) {
        i64::from(r.byte().await?)
    } else {
        r.int().await?
    };
    for _ in 0..7 {
        r.int().await?; // creation time
    }
    r.string().await?; // database name
    r.string().await?; // server version
    r.string().await?; // pg_dump version
    let count = r.int().await?;
    if !(0..=10_000_000).contains(&count) {
        return Err(bad(format!("the table of contents claims {count} entries")));
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut current = SECTION_NONE;
    for _ in 0..count {
        let dump_id = r.int().await?;
        r.int().await?; // had dumper
        r.string().await?; // table oid
        r.string().await?; // oid
        let tag = r.text().await?;
        let desc = r.text().await?;
        let own_section = r.int().await?;
        let defn = r.text().await?;
        r.string().await?; // drop statement
        let copy_stmt = r.text().await?;
        let namespace = r.text().await?;
        let tablespace = r.text().await?;
        r.string().await?; // table access method
        if version >= vers(1, 16) {
            r.int().await?; // relkind
        }
        r.string().await?; // owner
        r.string().await?; // "with oids", always false since PostgreSQL 12
        while r.string().await?.is_some() {} // dependencies
        r.byte().await?; // data offset: flag …
        r.bytes(r.off_size).await?; // … and position
        if own_section != SECTION_NONE {
            current = own_section;
        }
        entries.push(TocEntry {
            dump_id,
            desc,
            section: current,
            defn,
            copy_stmt,
            namespace,
            tag,
            tablespace,
        });
    }
    let bytes = r.record.take().unwrap_or_default();
    Ok(Head {
        bytes,
        toc: Some(Toc {
            entries,
            compressed: compression != 0,
            int_size: r.int_size,
        }),
    })
}

/// The data blocks after the table of contents.
pub(crate) struct Blocks<'r, R> {
    reader: Reader<'r, R>,
}

impl<'r, R: AsyncRead + Unpin> Blocks<'r, R> {
    /// Reads blocks from `input`, positioned after [`read_head`] of an archive with `toc`.
    pub fn new(input: &'r mut R, toc: &Toc) -> Self {
        let int_size = toc.int_size;
        Blocks {
            reader: Reader {
                inner: input,
                int_size,
                off_size: 8,
                record: None,
            },
        }
    }

    /// The next block, or `None` at the end of the archive.
    pub async fn next_block(&mut self) -> std::io::Result<Option<Block>> {
        let mut first = [0u8; 1];
        if self.reader.inner.read(&mut first).await? == 0 {
            return Ok(None);
        }
        let dump_id = self.reader.int().await?;
        Ok(Some(match first[0] {
            BLK_DATA => Block::Data { dump_id },
            kind => Block::Other { kind },
        }))
    }

    /// Appends the next chunk of the current data block to `buf`; `false` at the block's end.
    pub async fn next_chunk(&mut self, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        let len = self.reader.int().await?;
        if len == 0 {
            return Ok(false);
        }
        let len = usize::try_from(len).map_err(|_| bad("a negative data chunk length"))?;
        if len > 1 << 30 {
            return Err(bad(format!("a data chunk of {len} bytes")));
        }
        let start = buf.len();
        buf.resize(start + len, 0);
        self.reader.inner.read_exact(&mut buf[start..]).await?;
        Ok(true)
    }
}
