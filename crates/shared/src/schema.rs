//! OpenAPI schemas of the validated names and ids, with every rule their `parse` enforces
//! (pattern, length), so the admin API's generated document states what the server takes.
//! The other shared types derive `utoipa::ToSchema` next to their serde derives.
use std::borrow::Cow;

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::ids::{
    AppName, ChannelName, DeadLetterId, EventId, InvocationId, RoutePath, ScriptName, TokenId,
    TriggerId,
};
use crate::store::HttpMethod;

/// The pattern of an app name. `parse` also refuses `RESERVED_APP_NAMES`, which the
/// schema states with `not`.
pub const APP_NAME_PATTERN: &str = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$";
pub const SCRIPT_NAME_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$";
pub const CHANNEL_NAME_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,128}$";
/// A route pattern: `/`, or segments of `a-z 0-9 -_.~@+!,;=` (the first not starting with
/// `_`), `:param` segments and a last `*rest`, with an optional trailing `/`.
pub const ROUTE_PATH_PATTERN: &str = concat!(
    "^/$|^/",
    "([A-Za-z0-9.~@+!,;=-][A-Za-z0-9_.~@+!,;=-]*|:[A-Za-z_][A-Za-z0-9_]*)",
    "(/([A-Za-z0-9_.~@+!,;=-]+|:[A-Za-z_][A-Za-z0-9_]*))*",
    "(/\\*[A-Za-z_][A-Za-z0-9_]*)?/?$|^/\\*[A-Za-z_][A-Za-z0-9_]*/?$"
);

/// A schema written as JSON, for what the builders cannot say (`oneOf` of closed
/// objects, `not`): it is carried as is into the document.
pub fn raw(value: serde_json::Value) -> RefOr<Schema> {
    let mut object = utoipa::openapi::schema::Object::default();
    if let serde_json::Value::Object(map) = value {
        object.extensions = Some(map.into_iter().collect());
    }
    RefOr::T(Schema::Object(object))
}

fn string(pattern: &str, max: usize, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(Some(max))
        .description(Some(description))
}

macro_rules! named_schema {
    ($ty:ty, $name:literal, $build:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                let schema: ObjectBuilder = $build;
                RefOr::T(Schema::Object(schema.build()))
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

named_schema!(AppName, "AppName", {
    let mut schema = string(
        APP_NAME_PATTERN,
        AppName::MAX_LEN,
        "A lowercase slug: 1 to 63 of a-z, 0-9 and '-', starting with a letter and not ending with '-'; not one of the platform's names (api, dashboard, healthz, readyz, metrics).",
    )
    .build();
    schema.extensions.get_or_insert_default().insert(
        "not".into(),
        serde_json::json!({"enum": crate::ids::RESERVED_APP_NAMES}),
    );
    ObjectBuilder::from(schema)
});
named_schema!(
    ScriptName,
    "ScriptName",
    string(
        SCRIPT_NAME_PATTERN,
        ScriptName::MAX_LEN,
        "1 to 64 of letters, digits, '_' and '-', not starting with '-'."
    )
);
named_schema!(
    ChannelName,
    "ChannelName",
    string(
        CHANNEL_NAME_PATTERN,
        ChannelName::MAX_LEN,
        "A topic or queue name: 1 to 128 of letters, digits and '_', '-', '.', ':'."
    )
);
named_schema!(
    RoutePath,
    "RoutePath",
    string(
        ROUTE_PATH_PATTERN,
        RoutePath::MAX_LEN,
        "A route inside the app: starts with '/', not '/_'; segments of a-z, 0-9 and -_.~@+!,;=, ':param' segments and a final '*rest'."
    )
);
named_schema!(HttpMethod, "HttpMethod", {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([
            "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY",
        ]))
        .description(Some("ANY matches every method."))
});

macro_rules! uuid_schema {
    ($($ty:ty => $name:literal),+ $(,)?) => {$(
        named_schema!($ty, $name, {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        });
    )+};
}

uuid_schema!(
    InvocationId => "InvocationId",
    TriggerId => "TriggerId",
    TokenId => "TokenId",
    EventId => "EventId",
    DeadLetterId => "DeadLetterId",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_name_schema_states_its_pattern_and_reserved_names() {
        let json = serde_json::to_value(AppName::schema()).unwrap();
        assert_eq!(json["pattern"], APP_NAME_PATTERN);
        assert_eq!(json["maxLength"], 63);
        assert_eq!(json["not"]["enum"][0], "api");
    }
}
