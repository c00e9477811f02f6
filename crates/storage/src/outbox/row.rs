//! A claimed row back into an event; and, when it does not decode, what of it a dead
//! letter can keep, so that the dead letter itself can always be read and says why.
use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::{
    AppName, DeadLetter, DeadLetterId, Event, EventId, EventKind, ScriptName, StoreError, TriggerId,
};

use super::Letter;
use crate::sql::Cols;

/// The error of a dead letter made from a claimed row whose payload could not be read back
/// (and everything else could).
pub(crate) const UNREADABLE_EVENT: &str =
    "the stored event could not be read (its payload is kept as text)";

const PAYLOAD_AS_TEXT: &str = "its payload is kept as text";

/// A stored event kind that is none of the known ones: a corrupt row.
#[derive(Debug, thiserror::Error)]
#[error("unknown event kind in a stored row")]
pub(crate) struct CorruptKind;

/// A claimed row (the claim's columns) as the event it holds.
pub(crate) fn row_to_event(row: &impl Cols) -> Result<Event, StoreError> {
    Ok(Event {
        id: EventId(row.uuid("id")?),
        app: row.name("app", AppName::parse)?,
        kind: EventKind::parse(row.text("kind")?)
            .ok_or_else(|| StoreError::backend(CorruptKind))?,
        script: row
            .opt_text("script")?
            .map(|s| crate::decode(s, ScriptName::parse))
            .transpose()?,
        trigger: row.opt_uuid("trigger_id")?.map(TriggerId),
        source: row.opt_string("source")?,
        payload: row.json("payload")?,
        attempt: row.attempts("attempt")?,
        max_attempts: row.attempts("max_attempts")?,
        scheduled_at: row.ts("scheduled_at")?,
        created_at: row.ts("created_at")?,
        trace: row.opt_string("trace_context")?,
    })
}

/// The dead letter of a claimed row that does not decode, and the row's id: every column
/// that still reads is kept as it is, the others as close as a dead letter can hold, and
/// the error names each that was not. An unknown kind is kept as an `invoke` without a
/// script, so replaying it runs nothing; a payload that is not readable JSON is kept as a
/// JSON string of its text.
///
/// # Errors
/// When the row's id or app cannot be read: then no dead letter can name it.
pub(crate) fn salvage(
    row: &impl Cols,
    now: DateTime<Utc>,
) -> Result<(EventId, Letter), StoreError> {
    let id = EventId(row.uuid("id")?);
    let app = row.name("app", AppName::parse)?;
    let mut lost = Vec::new();
    let raw_kind = row.text("kind").unwrap_or_default();
    let kind = EventKind::parse(raw_kind);
    if kind.is_none() {
        lost.push(format!(
            "its kind {} is unknown, so it is kept as an invoke event without a script",
            quoted(raw_kind)
        ));
    }
    let raw_script = row.opt_text("script").ok().flatten();
    let script = raw_script.and_then(|s| ScriptName::parse(s).ok());
    if let (Some(raw), None) = (raw_script, &script) {
        lost.push(format!("its script name {} is not valid", quoted(raw)));
    }
    let raw_payload = row.text("payload").unwrap_or_default();
    let payload = serde_json::from_str(raw_payload).unwrap_or_else(|_| {
        lost.push(PAYLOAD_AS_TEXT.to_owned());
        Value::String(raw_payload.to_owned())
    });
    let letter = DeadLetter {
        id: DeadLetterId::new(),
        app,
        kind: kind.unwrap_or(EventKind::Invoke),
        script: script.filter(|_| kind.is_some()),
        source: row.opt_string("source").ok().flatten(),
        payload,
        attempts: row.attempts("attempt").unwrap_or(0),
        error: match lost.as_slice() {
            [] => "the stored event could not be read".to_owned(),
            [only] if only == PAYLOAD_AS_TEXT => UNREADABLE_EVENT.to_owned(),
            _ => format!("the stored event could not be read ({})", lost.join("; ")),
        },
        event_id: id,
        created_at: now,
    };
    let trigger = row.opt_uuid("trigger_id").ok().flatten().map(TriggerId);
    Ok((id, Letter { letter, trigger }))
}

/// Stored text as the owner reads it in an error: quoted, escaped and cut short.
fn quoted(raw: &str) -> String {
    const LONGEST: usize = 40;
    let mut shown: String = raw.chars().take(LONGEST).collect();
    if shown.len() < raw.len() {
        shown.push_str("...");
    }
    format!("{shown:?}")
}
