//! Validated names and ids. A value of these types has passed its validation, so code
//! that holds one never re-checks it; the only way in is `parse` (or serde, which calls it).
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

mod v7;

/// Why a name was refused; the text is shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

/// Path segments the platform owns; an app may not take them as its name.
pub const RESERVED_APP_NAMES: &[&str] = &["api", "dashboard", "healthz", "readyz", "metrics"];

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                $name::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
        impl std::str::FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, InvalidName> {
                $name::parse(s)
            }
        }
    };
}

/// An app's name: a lowercase slug (`shop`, `my-app-2`) that is also its URL prefix.
/// Shared, not copied, when cloned (every invocation names its app and script).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(Arc<str>);
string_newtype!(AppName);

impl AppName {
    pub const MAX_LEN: usize = 63;

    /// # Errors
    /// When `raw` is not a lowercase slug, or clashes with a platform path.
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        let valid_chars = raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let first_ok = raw
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_lowercase());
        if raw.is_empty()
            || raw.len() > Self::MAX_LEN
            || !valid_chars
            || !first_ok
            || raw.ends_with('-')
        {
            return Err(InvalidName(format!(
                "app name must be a lowercase slug: 1 to {} of a-z, 0-9 and '-', starting with a letter and not ending with '-'",
                Self::MAX_LEN
            )));
        }
        if RESERVED_APP_NAMES.contains(&raw) {
            return Err(InvalidName(format!(
                "app name '{raw}' is reserved by the platform"
            )));
        }
        Ok(AppName(Arc::from(raw)))
    }
}

/// A script's name within its app; also the name `import` resolves. Shared, not copied,
/// when cloned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScriptName(Arc<str>);
string_newtype!(ScriptName);

impl ScriptName {
    pub const MAX_LEN: usize = 64;

    /// # Errors
    /// When `raw` is empty, too long or has characters other than letters, digits, `_` and `-`.
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        let valid_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let first_ok = raw
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !valid_chars || !first_ok {
            return Err(InvalidName(format!(
                "script name must be 1 to {} of letters, digits, '_' and '-', not starting with '-'",
                Self::MAX_LEN
            )));
        }
        Ok(ScriptName(Arc::from(raw)))
    }
}

/// A route pattern inside an app: `/hello`, `/users/:id`, `/files/*rest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoutePath(String);
string_newtype!(RoutePath);

impl RoutePath {
    pub const MAX_LEN: usize = 256;

    /// # Errors
    /// When the pattern does not start with `/`, starts with `/_` (platform paths), has an
    /// empty segment, a bad parameter name, a `*` that is not last, or characters outside
    /// the URL path set.
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        let bad = |why: &str| {
            Err(InvalidName(format!(
                "route '{}' is invalid: {why}",
                truncate(raw, 80)
            )))
        };
        if !raw.starts_with('/') {
            return bad("it must start with '/'");
        }
        if raw.starts_with("/_") {
            return bad("routes starting with '/_' are reserved by the platform");
        }
        if raw.len() > Self::MAX_LEN {
            return bad("it is too long");
        }
        if raw == "/" {
            return Ok(RoutePath(raw.to_owned()));
        }
        let body = raw.strip_prefix('/').unwrap_or(raw);
        let body = body.strip_suffix('/').unwrap_or(body);
        let segments: Vec<&str> = body.split('/').collect();
        for (i, seg) in segments.iter().enumerate() {
            if seg.is_empty() {
                return bad("it has an empty segment");
            }
            if let Some(param) = seg.strip_prefix(':').or_else(|| seg.strip_prefix('*')) {
                let ident = !param.is_empty()
                    && param
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !param.as_bytes()[0].is_ascii_digit();
                if !ident {
                    return bad("a parameter needs a name of letters, digits and '_'");
                }
                if seg.starts_with('*') && i + 1 != segments.len() {
                    return bad("a '*' wildcard must be the last segment");
                }
            } else if !seg.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'_' | b'.' | b'~' | b'@' | b'+' | b'!' | b',' | b';' | b'='
                    )
            }) {
                return bad("it has characters outside a-z, 0-9 and -_.~@+!,;=");
            }
        }
        Ok(RoutePath(raw.to_owned()))
    }

    /// The segments of the pattern, without the leading and trailing slashes.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

macro_rules! uuid_id {
    ($name:ident) => {
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub Uuid);
        impl $name {
            /// A new time-ordered id (UUID v7): above every id made before it in the
            /// process (of any of these types), as `Uuid::now_v7` would make it.
            pub fn new() -> Self {
                $name(v7::now())
            }

            /// The smallest id made at `at` (to the millisecond): every id made before
            /// `at` sorts below it.
            pub fn first_at(at: chrono::DateTime<chrono::Utc>) -> Self {
                let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
                // 48 bits of Unix milliseconds, version 7, variant 0b10, the rest zero.
                let mut bytes = [0u8; 16];
                bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
                bytes[6] = 0x70;
                bytes[8] = 0x80;
                $name(Uuid::from_bytes(bytes))
            }

            /// When the id was made (UUID v7), to the millisecond.
            pub fn made_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
                let (secs, nanos) = self.0.get_timestamp()?.to_unix();
                chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
            }
        }
        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, uuid::Error> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

uuid_id!(InvocationId);
uuid_id!(TriggerId);
uuid_id!(TokenId);
uuid_id!(EventId);
uuid_id!(DeadLetterId);

/// A pub/sub topic or a queue name: 1 to 128 of letters, digits and `_ - . :`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);
string_newtype!(ChannelName);

impl ChannelName {
    pub const MAX_LEN: usize = 128;

    /// # Errors
    /// When `raw` is empty, too long or has other characters.
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if !ok {
            return Err(InvalidName(format!(
                "topic and queue names must be 1 to {} of letters, digits and '_', '-', '.', ':'",
                Self::MAX_LEN
            )));
        }
        Ok(ChannelName(raw.to_owned()))
    }
}

/// A KV key, blob name, config key or secret name: 1 to `max` bytes of UTF-8 without
/// control characters. Names are opaque data: they never become file paths.
///
/// # Errors
/// When `raw` is empty, longer than `max` bytes or contains a control character (NUL included).
pub fn check_data_name(what: &str, raw: &str, max: usize) -> Result<(), InvalidName> {
    if raw.is_empty() {
        return Err(InvalidName(format!("{what} may not be empty")));
    }
    if raw.len() > max {
        return Err(InvalidName(format!("{what} is longer than {max} bytes")));
    }
    if raw.chars().any(char::is_control) {
        return Err(InvalidName(format!(
            "{what} may not contain control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_made_before_an_instant_sort_below_its_first_id() {
        let at = chrono::Utc::now();
        let first = InvocationId::first_at(at);
        let earlier = InvocationId::first_at(at - chrono::Duration::milliseconds(1));
        let now = InvocationId::new();
        assert!(earlier < first);
        assert!(first <= now || now.made_at().unwrap() < at);
        assert_eq!(
            first.to_string().as_bytes()[14],
            b'7',
            "a version 7 uuid: {first}"
        );
        let made = first.made_at().unwrap();
        assert_eq!(made.timestamp_millis(), at.timestamp_millis());
        // The text form sorts like the bytes (SQLite keeps ids as text).
        assert!(earlier.to_string() < first.to_string());
    }

    #[test]
    fn new_ids_sort_between_the_first_ids_of_their_millisecond_and_the_next() {
        for _ in 0..1000 {
            let before = chrono::Utc::now();
            let id = EventId::new();
            let after = chrono::Utc::now() + chrono::Duration::milliseconds(1);
            assert!(EventId::first_at(before) <= id, "{id}");
            assert!(id < EventId::first_at(after), "{id}");
            assert!(EventId::first_at(before).to_string() <= id.to_string());
        }
    }

    use super::*;

    #[test]
    fn app_names_are_lowercase_slugs_that_do_not_clash_with_platform_paths() {
        for ok in ["shop", "my-app-2", "a"] {
            assert!(AppName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Shop",
            "_x",
            "-x",
            "x-",
            "a b",
            "api",
            "dashboard",
            "metrics",
            "healthz",
            "readyz",
            "9lives",
            "ä",
        ] {
            assert!(AppName::parse(bad).is_err(), "{bad}");
        }
        assert!(AppName::parse(&"a".repeat(64)).is_err());
        assert!(AppName::parse("api").unwrap_err().0.contains("reserved"));
    }

    #[test]
    fn script_names_refuse_paths_and_control_characters() {
        assert!(ScriptName::parse("hello_world-2").is_ok());
        for bad in ["", "../x", "a/b", "a\0b", "-x", "a.b", &"x".repeat(65)] {
            assert!(ScriptName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn routes_may_not_start_with_underscore_and_must_be_well_formed() {
        for ok in [
            "/",
            "/hello",
            "/users/:id",
            "/files/*rest",
            "/a/b/",
            "/v1.2/x-y",
        ] {
            assert!(RoutePath::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "hello",
            "/_realtime",
            "/_x/y",
            "//x",
            "/a//b",
            "/:",
            "/*rest/x",
            "/a?b",
            "/a b",
            "/:1x",
        ] {
            assert!(RoutePath::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RoutePath::parse("/_x").unwrap_err().0.contains("reserved"));
    }

    #[test]
    fn channel_and_data_names_refuse_control_characters_and_overlong_names() {
        assert!(ChannelName::parse("orders.created:v1").is_ok());
        for bad in ["", "a b", "a/b", &"q".repeat(129)] {
            assert!(ChannelName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(check_data_name("key", "users/42/../x", 512).is_ok());
        assert!(check_data_name("key", "a\u{0}b", 512).is_err());
        assert!(check_data_name("key", "line\nbreak", 512).is_err());
        assert!(check_data_name("key", "", 512).is_err());
        assert!(check_data_name("key", &"k".repeat(513), 512).is_err());
    }

    #[test]
    fn names_deserialize_through_validation() {
        let err = serde_json::from_str::<AppName>("\"API\"").unwrap_err();
        assert!(err.to_string().contains("slug"));
        let ok: AppName = serde_json::from_str("\"shop\"").unwrap();
        assert_eq!(ok.as_str(), "shop");
    }
}
