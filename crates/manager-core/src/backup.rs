//! The backup archive (docs/backup.md): a tar file of
//! - `objects/<key>`: each blob object's bytes, under the key its `blobs` row names;
//! - `tables/<table>.jsonl`: each table's rows, one JSON object per line;
//! - `manifest.json`, last: the PiCloud version, the archive format, the schema's migration
//!   level, the secrets key's fingerprint, counts, and the size and SHA-256 of every other
//!   entry.
//!
//! Reading checks everything before anything is used: every entry's checksum against the
//! manifest, no entry missing or extra, and an archive from a newer PiCloud refused by its
//! format or migration level. A truncated archive has no manifest (it is written last) or
//! ends inside an entry; either is refused.
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::store::{BackupRow, TableRows};

/// What every archive's manifest says it is.
pub const FORMAT: &str = "picloud-backup";
/// The archive layout this build writes and reads (and every older one it can read).
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's entry name.
pub const MANIFEST: &str = "manifest.json";
const TABLES_DIR: &str = "tables/";
const OBJECTS_DIR: &str = "objects/";

/// An archive's manifest.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Manifest {
    /// Always `picloud-backup`.
    pub format: String,
    pub format_version: u32,
    /// The version of the PiCloud that wrote it.
    pub picloud_version: String,
    /// The newest schema migration of the database it was read from.
    pub schema_version: i64,
    pub created_at: DateTime<Utc>,
    /// `sqlite` or `postgres`: where it was read from (it restores on either).
    pub backend: String,
    /// The fingerprint of the key that sealed the secrets in it.
    pub key_fingerprint: String,
    pub with_invocations: bool,
    /// Rows per table, and `objects`: the blob objects it holds.
    pub counts: BTreeMap<String, u64>,
    /// Every other entry, in archive order.
    pub entries: Vec<EntrySum>,
}

/// The size and SHA-256 of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EntrySum {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Why an archive cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Our own words about the archive: safe to show.
    #[error("{0}")]
    Invalid(String),
    #[error("the archive could not be written")]
    Io(#[source] std::io::Error),
}

fn invalid(msg: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid(msg.into())
}

/// Whatever tar reports about a broken file.
fn damaged<E>(_: E) -> ArchiveError {
    invalid("the archive is damaged or truncated: it is not a complete tar file")
}

/// A table's entry name.
pub fn table_path(table: &str) -> String {
    format!("{TABLES_DIR}{table}.jsonl")
}

/// A blob object's entry name.
pub fn object_path(key: &str) -> String {
    format!("{OBJECTS_DIR}{key}")
}

/// Writes an archive into a file, entry by entry.
pub struct ArchiveWriter {
    builder: tar::Builder<File>,
    entries: Vec<EntrySum>,
}

impl ArchiveWriter {
    pub fn new(file: File) -> Self {
        let mut builder = tar::Builder::new(file);
        builder.mode(tar::HeaderMode::Deterministic);
        ArchiveWriter {
            builder,
            entries: Vec::new(),
        }
    }

    /// # Errors
    /// When the file cannot be written.
    pub fn add(&mut self, path: &str, data: &[u8]) -> Result<(), ArchiveError> {
        self.append(path, data)?;
        self.entries.push(EntrySum {
            path: path.to_owned(),
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        });
        Ok(())
    }

    fn append(&mut self, path: &str, data: &[u8]) -> Result<(), ArchiveError> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        self.builder
            .append_data(&mut header, path, data)
            .map_err(ArchiveError::Io)
    }

    /// Rows of one table, as JSON lines.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn add_table(&mut self, table: &TableRows) -> Result<(), ArchiveError> {
        let mut lines = Vec::new();
        for row in &table.rows {
            serde_json::to_writer(&mut lines, row)
                .map_err(|e| ArchiveError::Io(std::io::Error::other(e)))?;
            lines.push(b'\n');
        }
        self.add(&table_path(&table.table), &lines)
    }

    /// Write the manifest (with the sums of every entry so far) and close the archive;
    /// returns the file, rewound, and its size.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn finish(mut self, mut manifest: Manifest) -> Result<(File, u64), ArchiveError> {
        manifest.entries = std::mem::take(&mut self.entries);
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| ArchiveError::Io(std::io::Error::other(e)))?;
        self.append(MANIFEST, &text)?;
        let mut file = self.builder.into_inner().map_err(ArchiveError::Io)?;
        let size = file.seek(SeekFrom::End(0)).map_err(ArchiveError::Io)?;
        file.seek(SeekFrom::Start(0)).map_err(ArchiveError::Io)?;
        Ok((file, size))
    }
}

/// An archive whose every entry matched its manifest.
#[derive(Debug)]
pub struct Verified {
    pub manifest: Manifest,
    pub tables: Vec<TableRows>,
    /// The blob object keys it holds.
    pub objects: BTreeSet<String>,
}

/// Read the whole archive and check it against its manifest; nothing is used before
/// every check passed. `schema_version` is the newest migration this build has.
///
/// # Errors
/// `Invalid` naming what is wrong: damaged or truncated, from a newer PiCloud, an entry
/// whose checksum differs, missing or not listed.
pub fn verify(file: &mut File, schema_version: i64) -> Result<Verified, ArchiveError> {
    file.seek(SeekFrom::Start(0)).map_err(ArchiveError::Io)?;
    let mut archive = tar::Archive::new(&mut *file);
    let mut sums = Vec::new();
    let mut tables = Vec::new();
    let mut manifest_text = None;
    for entry in archive.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let path = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| invalid("the archive has an entry whose name is not UTF-8"))?;
        if manifest_text.is_some() {
            return Err(invalid(format!(
                "the archive has an entry after its manifest: {path}"
            )));
        }
        let mut hasher = Sha256::new();
        let mut kept = Vec::new();
        let keep = path == MANIFEST || path.starts_with(TABLES_DIR);
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(damaged)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
            if keep {
                kept.extend_from_slice(&buf[..n]);
            }
        }
        if size != entry.size() {
            return Err(damaged(()));
        }
        if path == MANIFEST {
            manifest_text = Some(kept);
            continue;
        }
        if keep {
            tables.push((path.clone(), kept));
        }
        sums.push(EntrySum {
            path,
            size,
            sha256: hex::encode(hasher.finalize()),
        });
    }
    let manifest_text = manifest_text
        .ok_or_else(|| invalid("the archive is truncated or incomplete: it has no manifest"))?;
    let manifest = read_manifest(&manifest_text, schema_version)?;
    check_sums(&manifest.entries, &sums)?;
    let mut rows = Vec::new();
    for (path, text) in tables {
        rows.push(parse_table(&path, &text)?);
    }
    let objects = sums
        .iter()
        .filter_map(|s| s.path.strip_prefix(OBJECTS_DIR).map(str::to_owned))
        .collect();
    Ok(Verified {
        manifest,
        tables: rows,
        objects,
    })
}

fn read_manifest(text: &[u8], schema_version: i64) -> Result<Manifest, ArchiveError> {
    let raw: serde_json::Value = serde_json::from_slice(text)
        .map_err(|_| invalid("the archive's manifest is not valid JSON"))?;
    if raw.get("format").and_then(serde_json::Value::as_str) != Some(FORMAT) {
        return Err(invalid("this is not a PiCloud backup archive"));
    }
    // Version first, so a newer archive is named as such, whatever else changed in it.
    let version = raw
        .get("format_version")
        .and_then(serde_json::Value::as_u64);
    let written_by = raw
        .get("picloud_version")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("unknown")
        .chars()
        .take(40)
        .collect::<String>();
    if version.is_none_or(|v| v > u64::from(FORMAT_VERSION)) {
        return Err(invalid(format!(
            "the archive was written by a newer PiCloud ({written_by}, archive format {}); this server ({}) reads format {FORMAT_VERSION}: upgrade it first",
            version.map_or_else(|| "unknown".to_owned(), |v| v.to_string()),
            env!("CARGO_PKG_VERSION"),
        )));
    }
    let manifest: Manifest = serde_json::from_value(raw)
        .map_err(|e| invalid(format!("the archive's manifest is malformed: {e}")))?;
    if manifest.schema_version > schema_version {
        return Err(invalid(format!(
            "the archive was written by a newer PiCloud ({written_by}, schema migration {}); this server ({}) is at migration {schema_version}: upgrade it first",
            manifest.schema_version,
            env!("CARGO_PKG_VERSION"),
        )));
    }
    Ok(manifest)
}

fn check_sums(listed: &[EntrySum], found: &[EntrySum]) -> Result<(), ArchiveError> {
    let found_by_path: BTreeMap<&str, &EntrySum> =
        found.iter().map(|s| (s.path.as_str(), s)).collect();
    if found_by_path.len() != found.len() {
        return Err(invalid("the archive has an entry twice"));
    }
    for want in listed {
        let Some(got) = found_by_path.get(want.path.as_str()) else {
            return Err(invalid(format!(
                "the archive is incomplete: {} is missing",
                want.path
            )));
        };
        if got.size != want.size || got.sha256 != want.sha256 {
            return Err(invalid(format!(
                "the archive is corrupted: the checksum of {} does not match its manifest",
                want.path
            )));
        }
    }
    if let Some(extra) = found
        .iter()
        .find(|s| !listed.iter().any(|l| l.path == s.path))
    {
        return Err(invalid(format!(
            "the archive has an entry its manifest does not list: {}",
            extra.path
        )));
    }
    Ok(())
}

fn parse_table(path: &str, text: &[u8]) -> Result<TableRows, ArchiveError> {
    let table = path
        .strip_prefix(TABLES_DIR)
        .and_then(|p| p.strip_suffix(".jsonl"))
        .ok_or_else(|| invalid(format!("the archive has an unexpected entry {path}")))?;
    let text = std::str::from_utf8(text).map_err(|_| invalid(format!("{path} is not UTF-8")))?;
    let rows = text
        .lines()
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str::<BackupRow>(line)
                .map_err(|_| invalid(format!("{path} line {} is not a JSON object", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TableRows {
        table: table.to_owned(),
        rows,
    })
}

/// Hand each blob object of a verified archive to `each` (its key and bytes), in archive
/// order.
///
/// # Errors
/// A read failure, or the first error `each` returns.
pub fn for_each_object(
    file: &mut File,
    mut each: impl FnMut(String, Vec<u8>) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    file.seek(SeekFrom::Start(0)).map_err(ArchiveError::Io)?;
    let mut archive = tar::Archive::new(&mut *file);
    for entry in archive.entries().map_err(ArchiveError::Io)? {
        let mut entry = entry.map_err(ArchiveError::Io)?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if let Some(key) = path.strip_prefix(OBJECTS_DIR) {
            let mut data = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
            entry.read_to_end(&mut data).map_err(ArchiveError::Io)?;
            each(key.to_owned(), data)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            picloud_version: "0.1.0".into(),
            schema_version: 3,
            created_at: Utc::now(),
            backend: "sqlite".into(),
            key_fingerprint: "fp".into(),
            with_invocations: false,
            counts: BTreeMap::new(),
            entries: Vec::new(),
        }
    }

    fn archive(m: Manifest) -> File {
        let mut w = ArchiveWriter::new(tempfile::tempfile().expect("temp"));
        w.add(&object_path("shop/1"), b"bytes").expect("add");
        let mut row = BackupRow::new();
        row.insert("name".into(), "shop".into());
        w.add_table(&TableRows {
            table: "apps".into(),
            rows: vec![row],
        })
        .expect("table");
        w.finish(m).expect("finish").0
    }

    #[test]
    fn an_archive_reads_back_what_was_written() {
        let mut file = archive(manifest());
        let v = verify(&mut file, 3).expect("verify");
        assert_eq!(v.tables.len(), 1);
        assert_eq!(v.tables[0].rows[0]["name"], "shop");
        assert!(v.objects.contains("shop/1"));
        let mut seen = Vec::new();
        for_each_object(&mut file, |k, d| {
            seen.push((k, d));
            Ok(())
        })
        .expect("objects");
        assert_eq!(seen, vec![("shop/1".to_owned(), b"bytes".to_vec())]);
    }

    fn bytes_of(mut file: File) -> Vec<u8> {
        let mut out = Vec::new();
        file.read_to_end(&mut out).expect("read");
        out
    }

    fn file_of(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().expect("temp");
        std::io::Write::write_all(&mut f, bytes).expect("write");
        f
    }

    #[test]
    fn a_flipped_byte_or_a_cut_is_refused() {
        let good = bytes_of(archive(manifest()));
        let at = good
            .windows(5)
            .position(|w| w == b"bytes")
            .expect("object bytes");
        let mut bad = good.clone();
        bad[at] ^= 1;
        let err = verify(&mut file_of(&bad), 3).expect_err("corrupt");
        assert!(
            err.to_string().contains("checksum of objects/shop/1"),
            "{err}"
        );
        for cut in [good.len() / 3, good.len() / 2, good.len() - 1100] {
            let err = verify(&mut file_of(&good[..cut]), 3).expect_err("truncated");
            assert!(err.to_string().contains("truncated"), "{cut}: {err}");
        }
    }

    #[test]
    fn a_newer_format_or_schema_is_named() {
        let mut m = manifest();
        m.format_version = FORMAT_VERSION + 1;
        let err = verify(&mut archive(m), 3).expect_err("newer format");
        assert!(err.to_string().contains("newer PiCloud"), "{err}");
        let err = verify(&mut archive(manifest()), 2).expect_err("newer schema");
        assert!(err.to_string().contains("schema migration 3"), "{err}");
    }
}
