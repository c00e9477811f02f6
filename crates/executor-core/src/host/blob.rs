//! `blob::put/get/delete/list`: the app's named blobs.
//!
//! What must stay true: `put` writes the bytes to the object store at once (under a key
//! the object store picks, never derived from the name) and only buffers the name
//! change (`Effects.blobs`, under the run's caps, checked before the bytes are written);
//! the run's buffer remembers the object, so a run that fails deletes it and nothing
//! points at it, and a put over a name put earlier in the run deletes the earlier object. Reads see the run's own puts and deletes.
//! Names and contents never reach a span, a log line or an error.
use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rhai::{Array, Blob, Dynamic, EvalAltResult, ImmutableString, Map, Module};
use shared::{BlobWrite, StoreError, check_data_name};

use super::page;
use super::value::{check_options, int_in, opt_string};
use crate::context::{self, Current};
use crate::error::HostError;

const MAX_NAME_BYTES: usize = 1024;
const MAX_CONTENT_TYPE_BYTES: usize = 255;
const DEFAULT_LIST_LIMIT: i64 = 100;
const MAX_LIST_LIMIT: i64 = 1000;

type HostResult<T> = Result<T, Box<EvalAltResult>>;

pub(super) fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn(
        "put",
        |name: ImmutableString, data: Dynamic| -> HostResult<()> { Ok(put(&name, data, None)?) },
    );
    m.set_native_fn(
        "put",
        |name: ImmutableString, data: Dynamic, content_type: ImmutableString| -> HostResult<()> {
            Ok(put(&name, data, Some(&content_type))?)
        },
    );
    m.set_native_fn("get", |name: ImmutableString| -> HostResult<Dynamic> {
        Ok(get(&name)?)
    });
    m.set_native_fn("delete", |name: ImmutableString| -> HostResult<()> {
        Ok(delete(&name)?)
    });
    m.set_native_fn("list", |prefix: ImmutableString| -> HostResult<Map> {
        Ok(list(&prefix, &Map::new())?)
    });
    m.set_native_fn(
        "list",
        |prefix: ImmutableString, opts: Map| -> HostResult<Map> { Ok(list(&prefix, &opts)?) },
    );
    m
}

fn check_name(call: &str, name: &str) -> Result<(), HostError> {
    check_data_name("blob name", name, MAX_NAME_BYTES)
        .map_err(|e| HostError::refused(format!("{call}: {e}")))
}

fn put(name: &str, data: Dynamic, content_type: Option<&str>) -> Result<(), HostError> {
    let cx = context::current("blob::put")?;
    let _span = tracing::info_span!("host.blob.put", app = %cx.app).entered();
    check_name("blob::put", name)?;
    if let Some(ct) = content_type {
        let valid = !ct.is_empty()
            && ct.len() <= MAX_CONTENT_TYPE_BYTES
            && http::HeaderValue::from_str(ct).is_ok();
        if !valid {
            return Err(HostError::refused(
                "blob::put: content type must be a valid header value of at most 255 bytes",
            ));
        }
    }
    let bytes: Bytes = if data.is_blob() {
        Bytes::from(data.cast::<Blob>())
    } else if data.is_string() {
        Bytes::from(data.into_string().unwrap_or_default().into_bytes())
    } else {
        return Err(HostError::refused(format!(
            "blob::put: data must be a string or a blob, not '{}'",
            data.type_name()
        )));
    };
    let max = cx.limits().max_blob_bytes;
    if bytes.len() > max {
        return Err(HostError::refused(format!(
            "blob::put: data is larger than {max} bytes"
        )));
    }
    context::blob_room("blob::put", name, bytes.len())?;
    let size = bytes.len() as u64;
    let object = cx
        .block_on(cx.store().objects.put(&cx.app, bytes))
        .map_err(|e| HostError::backend("blob::put", e))?;
    let write = BlobWrite::Put {
        name: name.to_owned(),
        object: object.clone(),
        size,
        content_type: content_type.map(str::to_owned),
    };
    context::buffer_blob(&cx, "blob::put", write).inspect_err(|_| {
        context::delete_objects(&cx.runner, &cx.app, vec![object]);
    })
}

fn get(name: &str) -> Result<Dynamic, HostError> {
    let cx = context::current("blob::get")?;
    let _span = tracing::info_span!("host.blob.get", app = %cx.app).entered();
    check_name("blob::get", name)?;
    let Some((object, size, content_type)) = locate(&cx, name)? else {
        return Ok(Dynamic::UNIT);
    };
    let bytes = match cx.block_on(cx.store().objects.get(&object)) {
        Ok(bytes) => bytes,
        // Deleted by a concurrent commit between the two reads: the blob is gone.
        Err(StoreError::NotFound(_)) => return Ok(Dynamic::UNIT),
        Err(e) => return Err(HostError::backend("blob::get", e)),
    };
    let data = std::str::from_utf8(&bytes).map_or(Dynamic::UNIT, |s| Dynamic::from(s.to_owned()));
    let mut out = Map::new();
    out.insert("data".into(), data);
    out.insert("bytes".into(), Dynamic::from_blob(bytes.to_vec()));
    out.insert(
        "content_type".into(),
        content_type.map_or(Dynamic::UNIT, Dynamic::from),
    );
    out.insert(
        "size".into(),
        Dynamic::from(i64::try_from(size).unwrap_or(i64::MAX)),
    );
    Ok(Dynamic::from_map(out))
}

/// Where the blob's bytes are as this run sees it: its own last put or delete, else
/// the store. `None` when there is no such blob.
fn locate(cx: &Current, name: &str) -> Result<Option<(String, u64, Option<String>)>, HostError> {
    let last = context::with_effects(|effects| {
        effects
            .blobs
            .iter()
            .rev()
            .find(|w| name_of(w) == name)
            .cloned()
    })
    .flatten();
    match last {
        Some(BlobWrite::Put {
            object,
            size,
            content_type,
            ..
        }) => Ok(Some((object, size, content_type))),
        Some(BlobWrite::Delete { .. }) => Ok(None),
        None => {
            let meta = cx
                .block_on(cx.store().blobs.get(&cx.app, name))
                .map_err(|e| HostError::backend("blob::get", e))?;
            Ok(meta.map(|m| (m.object, m.size, m.content_type)))
        }
    }
}

fn delete(name: &str) -> Result<(), HostError> {
    let cx = context::current("blob::delete")?;
    let _span = tracing::info_span!("host.blob.delete", app = %cx.app).entered();
    check_name("blob::delete", name)?;
    context::buffer_blob(
        &cx,
        "blob::delete",
        BlobWrite::Delete {
            name: name.to_owned(),
        },
    )
}

/// What `list` shows of one blob.
#[derive(Clone)]
struct Listed {
    size: u64,
    content_type: Option<String>,
    updated_at: DateTime<Utc>,
}

fn list(prefix: &str, opts: &Map) -> Result<Map, HostError> {
    let cx = context::current("blob::list")?;
    let _span = tracing::info_span!("host.blob.list", app = %cx.app).entered();
    if !prefix.is_empty() {
        check_data_name("prefix", prefix, MAX_NAME_BYTES)
            .map_err(|e| HostError::refused(format!("blob::list: {e}")))?;
    }
    check_options("blob::list", opts, &["limit", "cursor"])?;
    let limit = match opts.get("limit").filter(|v| !v.is_unit()) {
        Some(v) => int_in("blob::list", "limit", v, 1, MAX_LIST_LIMIT)?,
        None => DEFAULT_LIST_LIMIT,
    };
    let after = opt_string("blob::list", "cursor", opts.get("cursor"))?;
    let limit = usize::try_from(limit).unwrap_or(100);
    let stored = cx
        .block_on(cx.store().blobs.list(
            &cx.app,
            prefix,
            after.as_deref(),
            u32::try_from(limit).unwrap_or(100),
        ))
        .map_err(|e| HostError::backend("blob::list", e))?;
    let full = stored.len() >= limit;
    let stored = stored
        .into_iter()
        .map(|m| {
            let listed = Listed {
                size: m.size,
                content_type: m.content_type,
                updated_at: m.updated_at,
            };
            (m.name, listed)
        })
        .collect();
    let buffered = buffered_blobs(prefix, after.as_deref());
    let (items, cursor) = page::merge(stored, full, buffered, limit);
    let blobs: Array = items
        .into_iter()
        .map(|(name, b)| {
            let mut m = Map::new();
            m.insert("name".into(), name.into());
            m.insert(
                "size".into(),
                Dynamic::from(i64::try_from(b.size).unwrap_or(i64::MAX)),
            );
            m.insert(
                "content_type".into(),
                b.content_type.map_or(Dynamic::UNIT, Dynamic::from),
            );
            m.insert(
                "updated_at".into(),
                b.updated_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .into(),
            );
            Dynamic::from_map(m)
        })
        .collect();
    let mut out = Map::new();
    out.insert("blobs".into(), blobs.into());
    out.insert("cursor".into(), cursor.map_or(Dynamic::UNIT, Dynamic::from));
    Ok(out)
}

fn name_of(write: &BlobWrite) -> &str {
    match write {
        BlobWrite::Put { name, .. } | BlobWrite::Delete { name } => name,
    }
}

/// The run's final state of each buffered name under `prefix` after `after`; a name put
/// during the run shows the time of the listing as its `updated_at`.
fn buffered_blobs(prefix: &str, after: Option<&str>) -> BTreeMap<String, Option<Listed>> {
    let now = Utc::now();
    context::with_effects(|effects| {
        let mut state = BTreeMap::new();
        for write in &effects.blobs {
            let name = name_of(write);
            if !name.starts_with(prefix) || after.is_some_and(|a| name <= a) {
                continue;
            }
            let listed = match write {
                BlobWrite::Put {
                    size, content_type, ..
                } => Some(Listed {
                    size: *size,
                    content_type: content_type.clone(),
                    updated_at: now,
                }),
                BlobWrite::Delete { .. } => None,
            };
            state.insert(name.to_owned(), listed);
        }
        state
    })
    .unwrap_or_default()
}
