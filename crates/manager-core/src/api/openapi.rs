//! The OpenAPI 3.1 document of the admin API, served without a token at
//! `GET /api/v1/openapi.json`. It is written by hand in `document`; a test checks that its
//! operations are exactly the route table's `ROUTES`.
use std::sync::LazyLock;

use axum::Json;
use serde_json::{Map, Value, json};
use shared::store::TokenRole;

use super::{Access, ROUTES};

static DOCUMENT: LazyLock<Value> = LazyLock::new(document);

pub(super) async fn serve() -> Json<Value> {
    Json(DOCUMENT.clone())
}

/// One operation: what it does, its body schema (if any), and its success answer.
fn op(summary: &str, body: Option<&str>, status: &str, answer: Option<&str>) -> Value {
    let mut operation = json!({
        "summary": summary,
        "responses": {
            status: match answer {
                Some(schema) => json!({
                    "description": "success",
                    "content": {"application/json": {"schema": schema_ref(schema)}}
                }),
                None => json!({"description": "success, no content"}),
            },
            "default": {
                "description": "an error",
                "content": {"application/json": {"schema": schema_ref("Error")}}
            }
        }
    });
    if let Some(schema) = body {
        operation["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema_ref(schema)}}
        });
    }
    operation
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn path_param(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

fn query_param(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

/// Attach path parameters to a path item.
fn item(params: Vec<Value>, operations: Value) -> Value {
    let mut item = operations;
    if !params.is_empty() {
        item["parameters"] = Value::Array(params);
    }
    item
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

fn list_of(key: &str, schema: &str) -> Value {
    object(
        &[key],
        json!({key: {"type": "array", "items": schema_ref(schema)}}),
    )
}

pub(super) fn document() -> Value {
    let string = json!({"type": "string"});
    let time = json!({"type": "string", "format": "date-time"});
    let uuid = json!({"type": "string", "format": "uuid"});
    let int = json!({"type": "integer", "format": "int64"});
    let app = path_param(
        "app",
        json!({"type": "string", "pattern": "^[a-z][a-z0-9-]{0,62}$"}),
    );
    let name = path_param(
        "name",
        json!({"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"}),
    );
    let id = path_param("id", uuid.clone());

    let mut paths = Map::new();
    let mut add = |path: &str, value: Value| {
        paths.insert(format!("/api/v1{path}"), value);
    };
    add(
        "/openapi.json",
        json!({"get": {
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "the OpenAPI document",
                "content": {"application/json": {"schema": {"type": "object"}}}}}
        }}),
    );
    add(
        "/apps",
        json!({
            "post": op("Create an app", Some("CreateApp"), "201", Some("App")),
            "get": op("List apps (a scoped token sees only its apps)", None, "200", Some("AppList")),
        }),
    );
    add(
        "/apps/{app}",
        item(
            vec![app.clone()],
            json!({
                "get": op("Show an app", None, "200", Some("App")),
                "delete": op("Delete an app with its scripts, triggers and history", None, "204", None),
            }),
        ),
    );
    add(
        "/apps/{app}/scripts",
        item(
            vec![app.clone()],
            json!({
                "get": op("List an app's scripts", None, "200", Some("ScriptList")),
            }),
        ),
    );
    add(
        "/apps/{app}/scripts/{name}",
        item(
            vec![app.clone(), name.clone()],
            json!({
                "put": op("Deploy a new version (201 on the first, 200 after; 422 on a compile error)",
                    Some("Deploy"), "200", Some("Deployed")),
                "get": op("Show a script with its active source", None, "200", Some("ScriptDetail")),
                "delete": op("Delete a script and the triggers bound to it", None, "204", None),
            }),
        ),
    );
    add(
        "/apps/{app}/scripts/{name}/versions",
        item(
            vec![app.clone(), name.clone()],
            json!({
                "get": op("List a script's versions, newest first", None, "200", Some("VersionList")),
            }),
        ),
    );
    add(
        "/apps/{app}/scripts/{name}/versions/{version}",
        item(
            vec![
                app.clone(),
                name.clone(),
                path_param("version", int.clone()),
            ],
            json!({
                "get": op("Show one version with its source", None, "200", Some("VersionDetail")),
            }),
        ),
    );
    add(
        "/apps/{app}/scripts/{name}/rollback",
        item(
            vec![app.clone(), name.clone()],
            json!({
                "post": op("Make an earlier version active", Some("Rollback"), "200", Some("Deployed")),
            }),
        ),
    );
    add(
        "/apps/{app}/triggers",
        item(
            vec![app.clone()],
            json!({
                "post": op("Bind a script to a trigger", Some("CreateTrigger"), "201", Some("Trigger")),
                "get": op("List an app's triggers", None, "200", Some("TriggerList")),
            }),
        ),
    );
    add(
        "/apps/{app}/triggers/{id}",
        item(
            vec![app.clone(), id.clone()],
            json!({
                "delete": op("Delete a trigger", None, "204", None),
            }),
        ),
    );
    let mut list_invocations = op(
        "List invocations, newest first",
        None,
        "200",
        Some("InvocationPage"),
    );
    list_invocations["parameters"] = json!([
        query_param("script", string.clone(), "only this script's runs"),
        query_param(
            "status",
            json!({"type": "string", "enum": ["ok", "error", "timeout"]}),
            "only runs that ended so"
        ),
        query_param(
            "since",
            time.clone(),
            "only runs that started at or after this RFC 3339 time"
        ),
        query_param(
            "until",
            time.clone(),
            "only runs that started before this RFC 3339 time"
        ),
        query_param("before", uuid.clone(), "the previous page's next_before"),
        query_param(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
            "page size"
        ),
    ]);
    add(
        "/apps/{app}/invocations",
        item(vec![app.clone()], json!({"get": list_invocations})),
    );
    add(
        "/apps/{app}/invocations/{id}",
        item(
            vec![app.clone(), id.clone()],
            json!({
                "get": op("Show one invocation", None, "200", Some("Invocation")),
            }),
        ),
    );

    let limit = |default: u32, max: u32| {
        query_param(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": max, "default": default}),
            "page size",
        )
    };
    let mut list_dead_letters = op(
        "List dead letters, newest first",
        None,
        "200",
        Some("DeadLetterPage"),
    );
    list_dead_letters["parameters"] = json!([
        query_param("before", uuid.clone(), "the previous page's next_before"),
        limit(50, 500),
    ]);
    add(
        "/apps/{app}/dead-letters",
        item(
            vec![app.clone()],
            json!({
                "get": list_dead_letters,
                "delete": op("Purge every dead letter of the app", None, "200", Some("Purged")),
            }),
        ),
    );
    add(
        "/apps/{app}/dead-letters/{id}",
        item(
            vec![app.clone(), id.clone()],
            json!({
                "get": op("Show one dead letter", None, "200", Some("DeadLetter")),
                "delete": op("Delete one dead letter", None, "204", None),
            }),
        ),
    );
    add(
        "/apps/{app}/dead-letters/{id}/replay",
        item(
            vec![app.clone(), id.clone()],
            json!({
                "post": op("Put the event back into the outbox (attempt 1) and delete the dead letter",
                    None, "202", Some("Replayed")),
            }),
        ),
    );
    let key = path_param(
        "key",
        json!({"type": "string", "minLength": 1, "description": "percent-encoded; no control characters"}),
    );
    let data_name = path_param(
        "name",
        json!({"type": "string", "minLength": 1, "description": "no control characters"}),
    );
    add(
        "/apps/{app}/config",
        item(
            vec![app.clone()],
            json!({"get": op("All config values of the app", None, "200", Some("ConfigMap"))}),
        ),
    );
    add(
        "/apps/{app}/config/{key}",
        item(
            vec![app.clone(), key.clone()],
            json!({
                "get": op("Show one config value", None, "200", Some("ConfigEntry")),
                "put": op("Set a config value (any JSON)", Some("SetConfig"), "200", Some("ConfigEntry")),
                "delete": op("Delete a config value", None, "204", None),
            }),
        ),
    );
    add(
        "/apps/{app}/secrets",
        item(
            vec![app.clone()],
            json!({"get": op("The names of the app's secrets (never their values)", None, "200", Some("SecretNames"))}),
        ),
    );
    add(
        "/apps/{app}/secrets/{name}",
        item(
            vec![app.clone(), data_name.clone()],
            json!({
                "get": op("Whether a secret is set (never its value)", None, "200", Some("SecretState")),
                "put": op("Set a secret (encrypted at rest; never returned)", Some("SetSecret"), "200", Some("SecretState")),
                "delete": op("Delete a secret", None, "204", None),
            }),
        ),
    );
    let paged = |what: &str, default: u32, max: u32| {
        json!([
            query_param(
                "prefix",
                string.clone(),
                &format!("only {what} starting with this")
            ),
            query_param("after", string.clone(), "the previous page's next_after"),
            limit(default, max),
        ])
    };
    let mut list_kv = op("List KV entries in key order", None, "200", Some("KvPage"));
    list_kv["parameters"] = paged("keys", 100, 1000);
    add(
        "/apps/{app}/kv",
        item(vec![app.clone()], json!({"get": list_kv})),
    );
    add(
        "/apps/{app}/kv/{key}",
        item(
            vec![app.clone(), key],
            json!({
                "get": op("Show one KV entry", None, "200", Some("KvEntry")),
                "delete": op("Delete one KV entry", None, "204", None),
            }),
        ),
    );
    let mut list_blobs = op("List blobs in name order", None, "200", Some("BlobPage"));
    list_blobs["parameters"] = paged("names", 100, 1000);
    add(
        "/apps/{app}/blobs",
        item(vec![app.clone()], json!({"get": list_blobs})),
    );
    let mut get_blob = op("The blob's bytes, with its content type", None, "200", None);
    get_blob["responses"]["200"] = json!({
        "description": "the blob's exact bytes, as an attachment",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    });
    add(
        "/apps/{app}/blobs/{name}",
        item(
            vec![app.clone(), data_name],
            json!({
                "get": get_blob,
                "delete": op("Delete a blob", None, "204", None),
            }),
        ),
    );
    let mut mailbox = op(
        "The development mailbox (emails sent without SMTP), newest first",
        None,
        "200",
        Some("Mailbox"),
    );
    mailbox["parameters"] = json!([limit(50, 500)]);
    add(
        "/apps/{app}/mailbox",
        item(vec![app.clone()], json!({"get": mailbox})),
    );
    add(
        "/apps/{app}/limits",
        item(
            vec![app.clone()],
            json!({
                "get": op("The app's limits: what it set, what is in force, what its scripts set", None, "200", Some("AppLimits")),
                "put": op("Set the app's limits (only the fields to override; replaces what was set)",
                    Some("LimitOverrides"), "200", Some("AppLimits")),
                "delete": op("Reset the app's limits to the server's", None, "204", None),
            }),
        ),
    );
    add(
        "/apps/{app}/scripts/{name}/limits",
        item(
            vec![app, name.clone()],
            json!({
                "get": op("The script's limits: what it set and what its runs get", None, "200", Some("ScriptLimits")),
                "put": op("Set the script's limits (only the fields to override; replaces what was set)",
                    Some("LimitOverrides"), "200", Some("ScriptLimits")),
                "delete": op("Reset the script's limits to its app's", None, "204", None),
            }),
        ),
    );
    add(
        "/tokens",
        json!({
            "post": op("Create a token; its secret is shown this once", Some("CreateToken"), "201", Some("CreatedToken")),
            "get": op("List tokens (never their secrets)", None, "200", Some("TokenList")),
        }),
    );
    add(
        "/nodes",
        json!({"get": op("Every node of the cluster: role, address, version, last heartbeat, load, up or down", None, "200", Some("NodeList"))}),
    );
    add(
        "/token",
        json!({"get": op("The calling token: its id, name, role and apps (never its secret)", None, "200", Some("Token"))}),
    );
    add(
        "/tokens/{id}",
        item(
            vec![id],
            json!({
                "delete": op("Delete a token (409 for the last admin token)", None, "204", None),
            }),
        ),
    );

    let deployed = object(
        &["app", "script", "version", "created_at"],
        json!({
            "app": string, "script": string, "version": int, "created_at": time,
        }),
    );
    let script_props = json!({
        "name": string, "active_version": int, "latest_version": int,
        "created_at": time, "updated_at": time,
    });
    let mut script_detail_props = script_props.clone();
    script_detail_props["source"] = string.clone();
    let role = json!({"type": "string", "enum": ["admin", "deploy", "read"]});
    let scope = json!({"type": ["array", "null"], "items": string,
        "description": "the apps the token covers; null (or absent when creating) is every app"});
    let token_props =
        json!({"id": uuid, "name": string, "role": role, "apps": scope, "created_at": time});
    let mut created_token_props = token_props.clone();
    created_token_props["token"] =
        json!({"type": "string", "description": "the secret, shown this once"});
    let nullable = |t: &str| json!({"type": [t, "null"]});

    let data_schemas = json!({
        "DeadLetter": object(&["id", "app", "kind", "payload", "attempts", "error", "event_id", "created_at"], json!({
            "id": uuid, "app": string,
            "kind": {"type": "string", "enum": ["topic", "queue", "invoke", "cron", "dead_letter", "email"]},
            "script": nullable("string"), "source": nullable("string"),
            "payload": {}, "attempts": {"type": "integer"}, "error": string,
            "event_id": uuid, "created_at": time,
        })),
        "DeadLetterPage": object(&["dead_letters", "next_before"], json!({
            "dead_letters": {"type": "array", "items": schema_ref("DeadLetter")},
            "next_before": {"type": ["string", "null"], "format": "uuid"},
        })),
        "Replayed": object(&["event_id"], json!({"event_id": uuid})),
        "Purged": object(&["purged"], json!({"purged": int})),
        "SetConfig": object(&["value"], json!({"value": {"description": "any JSON value"}})),
        "ConfigEntry": object(&["key", "value"], json!({"key": string, "value": {}})),
        "ConfigMap": object(&["config"], json!({"config": {"type": "object", "additionalProperties": {}}})),
        "SetSecret": object(&["value"], json!({"value": string})),
        "SecretState": object(&["name", "set"], json!({"name": string, "set": {"type": "boolean"}})),
        "SecretNames": object(&["secrets"], json!({"secrets": {"type": "array", "items": string}})),
        "KvEntry": object(&["key", "value", "updated_at", "expires_at"], json!({
            "key": string, "value": {}, "updated_at": time,
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
        })),
        "KvPage": object(&["entries", "next_after"], json!({
            "entries": {"type": "array", "items": schema_ref("KvEntry")},
            "next_after": nullable("string"),
        })),
        "Blob": object(&["name", "size", "content_type", "updated_at"], json!({
            "name": string, "size": int, "content_type": nullable("string"), "updated_at": time,
        })),
        "BlobPage": object(&["blobs", "next_after"], json!({
            "blobs": {"type": "array", "items": schema_ref("Blob")},
            "next_after": nullable("string"),
        })),
        "Email": object(&["to", "subject"], json!({
            "to": {"type": "array", "items": string}, "subject": string,
            "text": string, "html": string, "from": string, "reply_to": string,
        })),
        "Mailbox": object(&["messages"], json!({
            "messages": {"type": "array", "items": object(&["at", "message"], json!({
                "at": time, "message": schema_ref("Email"),
            }))},
        })),
    });
    let mut schemas = json!({
        "Error": object(&["error"], json!({"error": object(&["code", "message"], json!({
            "code": {"type": "string", "enum": ["not_found", "conflict", "invalid_input",
                "compile_error", "unauthorized", "payload_too_large", "unavailable", "internal"]},
            "message": string,
            "line": {"type": "integer", "description": "compile_error only, 1-based"},
            "column": {"type": "integer", "description": "compile_error only, 1-based"},
        }))})),
        "CreateApp": object(&["name"], json!({"name": string})),
        "App": object(&["name", "created_at"], json!({"name": string, "created_at": time})),
        "AppList": list_of("apps", "App"),
        "Deploy": object(&["source"], json!({"source": string})),
        "Deployed": deployed,
        "Rollback": object(&["version"], json!({"version": int})),
        "Script": object(&["name", "active_version", "latest_version", "created_at", "updated_at"], script_props),
        "ScriptList": list_of("scripts", "Script"),
        "ScriptDetail": object(&["name", "active_version", "latest_version", "created_at", "updated_at", "source"], script_detail_props),
        "Version": object(&["version", "created_at", "active", "size"], json!({
            "version": int, "created_at": time, "active": {"type": "boolean"}, "size": int,
        })),
        "VersionList": list_of("versions", "Version"),
        "VersionDetail": object(&["version", "created_at", "active", "source"], json!({
            "version": int, "created_at": time, "active": {"type": "boolean"}, "source": string,
        })),
        "CreateTrigger": object(&["kind", "script"], json!({
            "kind": {"type": "string", "enum": ["http", "cron", "topic", "queue", "dead_letter"]},
            "method": {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY"],
                "description": "http only"},
            "path": {"type": "string", "description": "http only: starts with '/', not '/_'; ':param' segments and a final '*rest'"},
            "schedule": {"type": "string", "description": "cron only: 5 fields (minute first) or 6 (second first)"},
            "timezone": {"type": "string", "default": "UTC", "description": "cron only: an IANA time zone"},
            "topic": {"type": "string", "description": "topic only: 1 to 128 of letters, digits and _ - . :"},
            "queue": {"type": "string", "description": "queue only: the same rules as topic; one consumer per queue"},
            "script": string,
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
        })),
        "Trigger": object(&["id", "app", "script", "kind", "max_attempts", "created_at"], json!({
            "id": uuid, "app": string, "script": string, "kind": string,
            "method": string, "path": string,
            "schedule": string, "timezone": string, "topic": string, "queue": string,
            "max_attempts": {"type": "integer"}, "created_at": time,
            "last_fired_at": time,
            "next_fire_at": time,
        })),
        "TriggerList": list_of("triggers", "Trigger"),
        "LogLine": object(&["at", "level", "message"], json!({
            "at": time,
            "level": {"type": "string", "enum": ["print", "debug", "info", "warn", "error"]},
            "message": string,
        })),
        "Invocation": object(&["id", "app", "script", "trigger", "status", "started_at", "duration_ms", "summary", "logs"], json!({
            "id": uuid, "app": string, "script": string, "version": nullable("integer"),
            "trigger": string,
            "status": {"type": "string", "enum": ["ok", "error", "timeout"]},
            "started_at": time, "duration_ms": {"type": "integer"},
            "http_status": nullable("integer"), "summary": string,
            "logs": {"type": "array", "items": schema_ref("LogLine")},
            "error": nullable("string"), "request_id": nullable("string"),
        })),
        "InvocationPage": object(&["invocations", "next_before", "dropped"], json!({
            "invocations": {"type": "array", "items": schema_ref("Invocation")},
            "next_before": {"type": ["string", "null"], "format": "uuid"},
            "dropped": {"type": "integer", "description": "failure records of the app not stored (over [invocations] failures_per_sec)"},
        })),
        "CreateToken": object(&["name"], json!({
            "name": string,
            "role": {"type": "string", "enum": ["admin", "deploy", "read"], "default": "admin"},
            "apps": {"type": "array", "items": string,
                "description": "the apps the token covers (not with role admin); absent is every app"},
        })),
        "Token": object(&["id", "name", "role", "apps", "created_at"], token_props),
        "TokenList": list_of("tokens", "Token"),
        "Node": object(&["id", "role", "address", "version", "started_at", "last_heartbeat",
            "heartbeat_ms", "in_flight", "queue_depth", "status"], json!({
            "id": string,
            "role": {"type": "string", "enum": ["all", "manager", "node"]},
            "address": string, "version": string, "started_at": time, "last_heartbeat": time,
            "heartbeat_ms": {"type": "integer"},
            "in_flight": {"type": "integer", "description": "events claimed and not yet committed"},
            "queue_depth": {"type": "integer", "description": "invocations waiting for a script thread"},
            "status": {"type": "string", "enum": ["up", "down"],
                "description": "down after three missed heartbeats"},
        })),
        "NodeList": list_of("nodes", "Node"),
        "CreatedToken": object(&["id", "name", "role", "apps", "created_at", "token"], created_token_props),
    });

    if let (Some(all), Value::Object(more)) = (schemas.as_object_mut(), data_schemas) {
        all.extend(more);
    }
    if let (Some(all), Value::Object(more)) = (schemas.as_object_mut(), limit_schemas()) {
        all.extend(more);
    }
    annotate_access(&mut paths);

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "PiCloud admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Apps, scripts and versions, triggers, invocations, dead letters, config and secrets, KV, blobs, the development mailbox and tokens."
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        }
    })
}

/// The limits' schemas: every field an integer (or null: not set), none other accepted.
fn limit_schemas() -> Value {
    let policy = shared::LimitPolicy::default();
    let mut fields = Map::new();
    let mut effective = Map::new();
    for &field in shared::LimitOverrides::FIELDS {
        let range = policy.range(field).unwrap_or(0..=0);
        fields.insert(
            field.to_owned(),
            json!({"type": ["integer", "null"], "minimum": range.start(),
                "description": "null or absent: not set"}),
        );
        effective.insert(field.to_owned(), json!({"type": ["integer", "null"]}));
    }
    let overrides = json!({"type": "object", "properties": fields, "additionalProperties": false,
        "description": "max_operations and max_call_depth at most the server's [limits]; timeout_ms at most half the event lease"});
    let effective = json!({"type": "object", "properties": effective,
        "description": "every field; max_concurrency and max_requests_per_sec null when not limited"});
    let string = json!({"type": "string"});
    json!({
        "LimitOverrides": overrides,
        "EffectiveLimits": effective,
        "AppLimits": object(&["app", "overrides", "effective", "scripts"], json!({
            "app": string, "overrides": schema_ref("LimitOverrides"),
            "effective": schema_ref("EffectiveLimits"),
            "scripts": {"type": "object", "additionalProperties": schema_ref("LimitOverrides")},
        })),
        "ScriptLimits": object(&["app", "script", "overrides", "effective"], json!({
            "app": string, "script": string, "overrides": schema_ref("LimitOverrides"),
            "effective": schema_ref("EffectiveLimits"),
        })),
    })
}

/// States each operation's `Access` from `ROUTES`: `x-picloud-role` (the least role that
/// passes, or `none`), `x-picloud-app-scoped`, a sentence in its description, and the 401
/// and 403 answers.
fn annotate_access(paths: &mut Map<String, Value>) {
    for route in ROUTES {
        let Some(operation) = paths
            .get_mut(route.path)
            .and_then(|item| item.get_mut(route.method.to_ascii_lowercase()))
        else {
            continue;
        };
        let role = route.access.role().map_or("none", TokenRole::as_str);
        operation["x-picloud-role"] = json!(role);
        operation["x-picloud-app-scoped"] =
            json!(matches!(route.access, Access::Read | Access::Deploy));
        let sentence = route.access.sentence();
        operation["description"] = match operation["description"].as_str() {
            Some(own) => json!(format!("{sentence} {own}")),
            None => json!(sentence),
        };
        if route.access != Access::Public {
            let error = json!({
                "content": {"application/json": {"schema": schema_ref("Error")}}
            });
            let mut unauthorized = error.clone();
            unauthorized["description"] = json!("no valid bearer token");
            let mut forbidden = error;
            forbidden["description"] =
                json!("the token's role or app scope does not allow this call");
            operation["responses"]["401"] = unauthorized;
            operation["responses"]["403"] = forbidden;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn operations(doc: &Value) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if method != "parameters" {
                    ops.insert((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        ops
    }

    #[test]
    fn the_document_lists_exactly_the_routes_of_the_route_table() {
        let documented = operations(&document());
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_owned(), r.path.to_owned()))
            .collect();
        assert_eq!(documented, routed);
    }

    #[test]
    fn every_operation_states_its_role_and_its_403() {
        let doc = document();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
            let role = op["x-picloud-role"].as_str().expect("x-picloud-role");
            let description = op["description"].as_str().expect("description");
            assert!(description.starts_with("Needs"), "{description}");
            if route.access == Access::Public {
                assert_eq!(role, "none");
            } else {
                assert!(["admin", "deploy", "read"].contains(&role), "{role}");
                assert!(
                    op["responses"]["403"].is_object(),
                    "{} {}",
                    route.method,
                    route.path
                );
            }
        }
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(schemas.contains_key(&name), "missing schema {name}");
        }
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn every_path_parameter_is_declared() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let declared: BTreeSet<&str> = item["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            for segment in path.split('/') {
                if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    assert!(declared.contains(name), "{path} does not declare {name}");
                }
            }
        }
    }
}
