//! The schemas of the data names the admin API takes in paths and queries (config keys,
//! secret names, KV keys, blob names): 1 to N bytes of UTF-8 without control characters
//! (`shared::check_data_name`). The document states the limit in characters as N / 4, so
//! any string it allows fits in N bytes.
use std::borrow::Cow;

use serde_json::json;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::data::{MAX_BLOB_NAME_BYTES, MAX_KEY_BYTES};
use super::settings::MAX_NAME_BYTES;

/// No control character (Unicode `Cc`, what `char::is_control` refuses).
pub(super) const NO_CONTROL: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

fn data_name(bytes: usize, min: usize, what: &str) -> RefOr<Schema> {
    shared::schema::raw(json!({
        "type": "string",
        "minLength": min,
        "maxLength": bytes / 4,
        "pattern": NO_CONTROL,
        "description": format!("{what}: at most {bytes} bytes of UTF-8, without control characters."),
    }))
}

macro_rules! name_schema {
    ($ty:ident, $bytes:expr, $min:expr, $what:literal) => {
        #[doc = $what]
        pub(super) struct $ty;
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                data_name($bytes, $min, $what)
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
        }
    };
}

name_schema!(ConfigKey, MAX_NAME_BYTES, 1, "A config key");
name_schema!(SecretName, MAX_NAME_BYTES, 1, "A secret's name");
name_schema!(KvKey, MAX_KEY_BYTES, 1, "A KV key");
name_schema!(
    BlobName,
    MAX_BLOB_NAME_BYTES,
    1,
    "A blob's name (may contain '/')"
);
name_schema!(KvPrefix, MAX_KEY_BYTES, 0, "A KV key prefix");
name_schema!(BlobPrefix, MAX_BLOB_NAME_BYTES, 0, "A blob name prefix");

/// No NUL (U+0000): PostgreSQL's text and jsonb cannot hold it, so no backend takes it.
pub(super) const NO_NUL: &str = r"^[^\u0000]*$";

/// A config value: any JSON whose strings and keys have no NUL.
pub(super) struct ConfigValue;

impl PartialSchema for ConfigValue {
    fn schema() -> RefOr<Schema> {
        let this = json!({"$ref": "#/components/schemas/ConfigValue"});
        shared::schema::raw(json!({
            "description": "Any JSON value; its strings and keys may not contain NUL (U+0000).",
            "anyOf": [
                {"type": ["null", "boolean", "number"]},
                {"type": "string", "pattern": NO_NUL},
                {"type": "array", "items": this},
                {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": this},
            ],
        }))
    }
}

impl ToSchema for ConfigValue {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ConfigValue")
    }
}

/// Whether any string or key in `value` holds a NUL.
pub(super) fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// The schemas that parameters name (`$ref`s the handlers' bodies do not bring in).
pub(super) fn parameter_schemas() -> Vec<(String, RefOr<Schema>)> {
    fn one<T: ToSchema>() -> (String, RefOr<Schema>) {
        (T::name().into_owned(), T::schema())
    }
    vec![
        one::<shared::AppName>(),
        one::<shared::ScriptName>(),
        one::<shared::TriggerId>(),
        one::<shared::InvocationId>(),
        one::<shared::DeadLetterId>(),
        one::<shared::TokenId>(),
        one::<shared::InvocationStatus>(),
        one::<super::invocations::InvocationTrigger>(),
        one::<ConfigKey>(),
        one::<SecretName>(),
        one::<KvKey>(),
        one::<BlobName>(),
        one::<KvPrefix>(),
        one::<BlobPrefix>(),
    ]
}
