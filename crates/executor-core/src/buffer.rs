//! The run's buffered effects: what its host calls wrote and emitted, held until the run
//! commits, under a cap on their number and bytes.
//!
//! What must stay true:
//! - a run holds at most `max_effects_per_run` entries and `max_effect_bytes_per_run`
//!   bytes (keys, names, values and payloads as JSON, blob contents): a call that would
//!   go past either is refused with a script error that names the setting, and the buffer
//!   is left as it was;
//! - a write supersedes the run's earlier writes of the same KV key or blob name: they
//!   leave the buffer (an `incr` adds into the one before it), so rewriting one key in a
//!   loop holds one entry; a superseded blob's object is handed back for deletion;
//! - entries below the floor belong to the callers of the nested `invoke` in progress and
//!   are never rewritten, so a failed callee is undone by cutting the buffer back to its
//!   mark, counts and bytes included.
use std::io;

use shared::{BlobWrite, Effects, Emit, KvWrite};

use crate::error::HostError;

/// The caps of one run, from its limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub(crate) max_count: usize,
    pub(crate) max_bytes: usize,
}

/// How far the buffer was filled when a nested `invoke` began.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mark {
    kv: usize,
    blobs: usize,
    emitted: usize,
    objects: usize,
    bytes: usize,
    /// The floor of the caller, back in force when the callee ends.
    floor: Floor,
}

/// Entries below these indexes are never rewritten.
#[derive(Debug, Clone, Copy, Default)]
struct Floor {
    kv: usize,
    blobs: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Buffer {
    effects: Effects,
    /// Object keys written by `blob::put` and still referenced by the buffer, in order.
    objects: Vec<String>,
    /// What the entries weigh against `max_bytes`.
    bytes: usize,
    floor: Floor,
}

impl Buffer {
    pub(crate) fn effects(&self) -> &Effects {
        &self.effects
    }

    /// The effects and the objects they reference.
    pub(crate) fn into_parts(self) -> (Effects, Vec<String>) {
        (self.effects, self.objects)
    }

    fn count(&self) -> usize {
        self.effects.kv.len() + self.effects.blobs.len() + self.effects.emitted.len()
    }

    /// Refuse an entry that would take the buffer past a cap, after `freed` entries of
    /// `freed_bytes` left it.
    fn admit(
        &self,
        call: &str,
        caps: Caps,
        (freed, freed_bytes): (usize, usize),
        added_bytes: usize,
    ) -> Result<(), HostError> {
        let count = self.count() - freed + 1;
        if count > caps.max_count {
            return Err(HostError::refused(format!(
                "{call}: a run may buffer at most {} writes and events (max_effects_per_run)",
                caps.max_count
            )));
        }
        let bytes = (self.bytes - freed_bytes).saturating_add(added_bytes);
        if bytes > caps.max_bytes {
            return Err(HostError::refused(format!(
                "{call}: a run may buffer at most {} bytes of writes and events (max_effect_bytes_per_run)",
                caps.max_bytes
            )));
        }
        Ok(())
    }

    /// Buffer a KV write, dropping the earlier writes of its key that it supersedes.
    ///
    /// # Errors
    /// When the buffer would go past a cap.
    pub(crate) fn push_kv(
        &mut self,
        call: &str,
        caps: Caps,
        write: KvWrite,
    ) -> Result<(), HostError> {
        let floor = self.floor.kv;
        let key = kv_key(&write);
        if let KvWrite::Incr { by, .. } = write {
            let last = self.effects.kv[floor..]
                .iter_mut()
                .rev()
                .find(|w| kv_key(w) == key);
            if let Some(KvWrite::Incr { by: before, .. }) = last
                && let Some(sum) = before.checked_add(by)
            {
                *before = sum;
                return Ok(());
            }
            self.admit(call, caps, (0, 0), kv_size(&write))?;
        } else {
            let superseded = self.effects.kv[floor..]
                .iter()
                .filter(|w| kv_key(w) == key)
                .fold((0, 0), |(n, b), w| (n + 1, b + kv_size(w)));
            self.admit(call, caps, superseded, kv_size(&write))?;
            let mut i = floor;
            while i < self.effects.kv.len() {
                if kv_key(&self.effects.kv[i]) == key {
                    self.effects.kv.remove(i);
                } else {
                    i += 1;
                }
            }
            self.bytes -= superseded.1;
        }
        self.bytes += kv_size(&write);
        self.effects.kv.push(write);
        Ok(())
    }

    /// Whether a `blob::put` of `size` bytes under `name` fits, checked before its bytes
    /// are written anywhere.
    ///
    /// # Errors
    /// When the buffer would go past a cap.
    pub(crate) fn blob_room(
        &self,
        call: &str,
        caps: Caps,
        name: &str,
        size: usize,
    ) -> Result<(), HostError> {
        // The object key is an app name and a UUID: at most ~100 bytes.
        self.admit(
            call,
            caps,
            self.superseded_blobs(name),
            name.len().saturating_add(size).saturating_add(100),
        )
    }

    fn superseded_blobs(&self, name: &str) -> (usize, usize) {
        self.effects.blobs[self.floor.blobs..]
            .iter()
            .filter(|w| blob_name(w) == name)
            .fold((0, 0), |(n, b), w| (n + 1, b + blob_size(w)))
    }

    /// Buffer a blob change (a `Put`'s object is remembered), dropping the earlier changes
    /// of its name that it supersedes. Returns the objects no longer referenced, for the
    /// caller to delete.
    ///
    /// # Errors
    /// When the buffer would go past a cap.
    pub(crate) fn push_blob(
        &mut self,
        call: &str,
        caps: Caps,
        write: BlobWrite,
    ) -> Result<Vec<String>, HostError> {
        let name = blob_name(&write).to_owned();
        let superseded = self.superseded_blobs(&name);
        self.admit(call, caps, superseded, blob_size(&write))?;
        let mut unreferenced = Vec::new();
        let mut i = self.floor.blobs;
        while i < self.effects.blobs.len() {
            if blob_name(&self.effects.blobs[i]) == name {
                if let BlobWrite::Put { object, .. } = self.effects.blobs.remove(i) {
                    unreferenced.push(object);
                }
            } else {
                i += 1;
            }
        }
        self.objects.retain(|o| !unreferenced.contains(o));
        self.bytes = self.bytes - superseded.1 + blob_size(&write);
        if let BlobWrite::Put { object, .. } = &write {
            self.objects.push(object.clone());
        }
        self.effects.blobs.push(write);
        Ok(unreferenced)
    }

    /// Buffer an emitted event or email.
    ///
    /// # Errors
    /// When the buffer would go past a cap.
    pub(crate) fn push_emit(
        &mut self,
        call: &str,
        caps: Caps,
        emit: Emit,
    ) -> Result<(), HostError> {
        let size = emit_size(&emit);
        self.admit(call, caps, (0, 0), size)?;
        self.bytes += size;
        self.effects.emitted.push(emit);
        Ok(())
    }

    /// A nested `invoke` begins: what is buffered so far is out of its reach.
    pub(crate) fn begin_nested(&mut self) -> Mark {
        let mark = Mark {
            kv: self.effects.kv.len(),
            blobs: self.effects.blobs.len(),
            emitted: self.effects.emitted.len(),
            objects: self.objects.len(),
            bytes: self.bytes,
            floor: self.floor,
        };
        self.floor = Floor {
            kv: mark.kv,
            blobs: mark.blobs,
        };
        mark
    }

    /// The nested `invoke` begun at `mark` ended: when it failed, what it buffered is
    /// dropped and the objects it wrote are returned, for the caller to delete.
    pub(crate) fn end_nested(&mut self, mark: Mark, succeeded: bool) -> Vec<String> {
        self.floor = mark.floor;
        if succeeded {
            return Vec::new();
        }
        self.effects.kv.truncate(mark.kv);
        self.effects.blobs.truncate(mark.blobs);
        self.effects.emitted.truncate(mark.emitted);
        self.bytes = mark.bytes;
        self.objects.split_off(mark.objects.min(self.objects.len()))
    }
}

fn kv_key(write: &KvWrite) -> &str {
    match write {
        KvWrite::Set { key, .. } | KvWrite::Delete { key } | KvWrite::Incr { key, .. } => key,
    }
}

fn kv_size(write: &KvWrite) -> usize {
    match write {
        KvWrite::Set { key, value, .. } => key.len() + json_len(value),
        KvWrite::Delete { key } => key.len(),
        KvWrite::Incr { key, .. } => key.len() + 8,
    }
}

fn blob_name(write: &BlobWrite) -> &str {
    match write {
        BlobWrite::Put { name, .. } | BlobWrite::Delete { name } => name,
    }
}

fn blob_size(write: &BlobWrite) -> usize {
    match write {
        BlobWrite::Put {
            name,
            object,
            size,
            content_type,
        } => {
            let stored = usize::try_from(*size).unwrap_or(usize::MAX);
            (name.len() + object.len() + content_type.as_ref().map_or(0, String::len))
                .saturating_add(stored)
        }
        BlobWrite::Delete { name } => name.len(),
    }
}

fn emit_size(emit: &Emit) -> usize {
    match emit {
        Emit::Publish { topic, payload } => topic.as_str().len() + json_len(payload),
        Emit::Send {
            queue,
            payload,
            idempotency_key,
            ..
        } => {
            queue.as_str().len()
                + json_len(payload)
                + idempotency_key.as_ref().map_or(0, String::len)
        }
        Emit::InvokeAsync { script, payload } => script.as_str().len() + json_len(payload),
        Emit::Email { message } => serde_json::to_vec(message).map_or(usize::MAX, |v| v.len()),
    }
}

/// The length of `value` as JSON, without building the text.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shared::ChannelName;

    use super::*;

    const CAPS: Caps = Caps {
        max_count: 3,
        max_bytes: 100,
    };

    fn set(key: &str, value: serde_json::Value) -> KvWrite {
        KvWrite::Set {
            key: key.into(),
            value,
            ttl: None,
        }
    }

    fn incr(key: &str, by: i64) -> KvWrite {
        KvWrite::Incr {
            key: key.into(),
            by,
        }
    }

    fn put(name: &str, object: &str, size: u64) -> BlobWrite {
        BlobWrite::Put {
            name: name.into(),
            object: object.into(),
            size,
            content_type: None,
        }
    }

    fn publish(payload: serde_json::Value) -> Emit {
        Emit::Publish {
            topic: ChannelName::parse("t").unwrap(),
            payload,
        }
    }

    #[test]
    fn rewriting_one_key_holds_one_entry_and_its_last_bytes() {
        let mut b = Buffer::default();
        for i in 0..1000 {
            b.push_kv("kv::set", CAPS, set("k", json!(i))).unwrap();
        }
        assert_eq!(b.effects().kv, [set("k", json!(999))]);
        assert_eq!(b.bytes, 1 + 3);
        b.push_kv("kv::delete", CAPS, KvWrite::Delete { key: "k".into() })
            .unwrap();
        assert_eq!(b.effects().kv, [KvWrite::Delete { key: "k".into() }]);
        assert_eq!(b.bytes, 1);
    }

    #[test]
    fn increments_of_one_key_add_up_in_one_entry() {
        let mut b = Buffer::default();
        b.push_kv("kv::set", CAPS, set("n", json!(5))).unwrap();
        for _ in 0..10 {
            b.push_kv("kv::incr", CAPS, incr("n", 2)).unwrap();
        }
        assert_eq!(b.effects().kv, [set("n", json!(5)), incr("n", 20)]);
        // A sum that would overflow stays a second entry.
        b.push_kv("kv::incr", CAPS, incr("m", i64::MAX)).unwrap();
        b.push_kv("kv::incr", CAPS, incr("m", 1)).unwrap_err();
        assert_eq!(
            b.effects().kv.len(),
            3,
            "the count cap of 3 refused the 4th"
        );
    }

    #[test]
    fn the_count_cap_refuses_the_entry_past_it_and_names_the_setting() {
        let mut b = Buffer::default();
        for key in ["a", "b", "c"] {
            b.push_kv("kv::set", CAPS, set(key, json!(1))).unwrap();
        }
        let err = b
            .push_emit("pubsub::publish", CAPS, publish(json!(1)))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pubsub::publish: a run may buffer at most 3 writes and events (max_effects_per_run)"
        );
        assert_eq!(b.count(), 3);
        // Rewriting a key already buffered still fits.
        b.push_kv("kv::set", CAPS, set("a", json!(2))).unwrap();
    }

    #[test]
    fn the_byte_cap_counts_what_is_held_and_leaves_the_buffer_as_it_was() {
        let mut b = Buffer::default();
        b.push_kv("kv::set", CAPS, set("a", json!("x".repeat(60))))
            .unwrap();
        let err = b
            .push_kv("kv::set", CAPS, set("b", json!("y".repeat(60))))
            .unwrap_err();
        assert!(err.to_string().contains("at most 100 bytes"), "{err}");
        assert!(
            err.to_string().contains("max_effect_bytes_per_run"),
            "{err}"
        );
        assert_eq!(b.effects().kv.len(), 1);
        // Replacing the big value by a small one frees its bytes.
        b.push_kv("kv::set", CAPS, set("a", json!(1))).unwrap();
        b.push_kv("kv::set", CAPS, set("b", json!("y".repeat(60))))
            .unwrap();
    }

    #[test]
    fn a_blob_put_over_the_same_name_hands_back_the_old_object() {
        let caps = Caps {
            max_count: 10,
            max_bytes: 1000,
        };
        let mut b = Buffer::default();
        b.blob_room("blob::put", caps, "a", 500).unwrap();
        assert!(
            b.push_blob("blob::put", caps, put("a", "o1", 500))
                .unwrap()
                .is_empty()
        );
        // A second 500 bytes under the same name fits: it replaces the first.
        b.blob_room("blob::put", caps, "a", 500).unwrap();
        let freed = b.push_blob("blob::put", caps, put("a", "o2", 500)).unwrap();
        assert_eq!(freed, ["o1"]);
        b.blob_room("blob::put", caps, "b", 600).unwrap_err();
        let (effects, objects) = b.into_parts();
        assert_eq!(effects.blobs, [put("a", "o2", 500)]);
        assert_eq!(objects, ["o2"]);
    }

    #[test]
    fn a_failed_callee_is_cut_off_and_cannot_rewrite_its_callers_entries() {
        let caps = Caps {
            max_count: 10,
            max_bytes: 1000,
        };
        let mut b = Buffer::default();
        b.push_kv("kv::set", caps, set("k", json!(1))).unwrap();
        b.push_blob("blob::put", caps, put("a", "o1", 10)).unwrap();
        let bytes = b.bytes;
        let mark = b.begin_nested();
        b.push_kv("kv::set", caps, set("k", json!(2))).unwrap();
        assert!(
            b.push_blob("blob::put", caps, put("a", "o2", 10))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            b.effects().kv.len(),
            2,
            "the caller's write is kept below the floor"
        );
        assert_eq!(b.end_nested(mark, false), ["o2"]);
        assert_eq!(b.effects().kv, [set("k", json!(1))]);
        assert_eq!(b.bytes, bytes);
        // After a callee that succeeded, the caller rewrites everything again.
        let mark = b.begin_nested();
        b.push_kv("kv::set", caps, set("k", json!(3))).unwrap();
        assert!(b.end_nested(mark, true).is_empty());
        b.push_kv("kv::set", caps, set("k", json!(4))).unwrap();
        assert_eq!(b.effects().kv, [set("k", json!(4))]);
    }
}
