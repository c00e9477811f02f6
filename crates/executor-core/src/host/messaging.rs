//! Messaging: `pubsub::publish`, `queue::send`, `invoke_async` (buffered events) and
//! `invoke` (a synchronous nested run).
//!
//! What must stay true:
//! - publish, send and invoke_async only buffer an `Emit`; it becomes outbox rows when
//!   the run commits, so a run that throws emits nothing (publish and send read nothing
//!   and may run in an inline try: `context::buffering_limits`; invoke_async looks its
//!   script up, which may read the store);
//! - `invoke` runs the callee now, on this thread, under the caller's operation budget
//!   and deadline, at most `max_invoke_depth` deep; the callee's effects merge into the
//!   caller's only when it succeeds (a failing callee leaves nothing behind, even when
//!   the caller catches its error); limits stay uncatchable.
use chrono::Utc;
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, Module, NativeCallContext};
use shared::{
    ChannelName, Emit, Event, EventId, EventKind, ExecError, InvocationInput, ScriptName,
};

use super::value::{check_options, opt_string, seconds, to_json};
use crate::context::{self, Current};
use crate::error::HostError;
use crate::executor::Loaded;
use crate::input;

/// Longest idempotency key of a `queue::send`.
const MAX_IDEMPOTENCY_KEY: usize = 256;

type HostResult<T> = Result<T, Box<EvalAltResult>>;

pub(super) fn pubsub_module() -> Module {
    let mut m = Module::new();
    m.set_native_fn(
        "publish",
        |topic: ImmutableString, payload: Dynamic| -> HostResult<()> {
            Ok(publish(&topic, &payload)?)
        },
    );
    m
}

pub(super) fn queue_module() -> Module {
    let mut m = Module::new();
    m.set_native_fn(
        "send",
        |queue: ImmutableString, payload: Dynamic| -> HostResult<()> {
            Ok(send(&queue, &payload, &Map::new())?)
        },
    );
    m.set_native_fn(
        "send",
        |queue: ImmutableString, payload: Dynamic, opts: Map| -> HostResult<()> {
            Ok(send(&queue, &payload, &opts)?)
        },
    );
    m
}

/// `invoke` and `invoke_async` are global functions.
pub(super) fn register(engine: &mut Engine) {
    engine.register_fn(
        "invoke",
        |ctx: NativeCallContext,
         script: ImmutableString,
         payload: Dynamic|
         -> HostResult<Dynamic> { invoke(&ctx, &script, &payload) },
    );
    engine.register_fn(
        "invoke_async",
        |script: ImmutableString, payload: Dynamic| -> HostResult<()> {
            Ok(invoke_async(&script, &payload)?)
        },
    );
}

fn channel(call: &str, raw: &str) -> Result<ChannelName, HostError> {
    ChannelName::parse(raw).map_err(|e| HostError::refused(format!("{call}: {e}")))
}

fn script_name(call: &str, raw: &str) -> Result<ScriptName, HostError> {
    ScriptName::parse(raw).map_err(|e| HostError::refused(format!("{call}: {e}")))
}

fn emit(call: &'static str, emit: Emit) -> Result<(), HostError> {
    context::buffer_emit(call, emit)
}

fn publish(topic: &str, payload: &Dynamic) -> Result<(), HostError> {
    let max_bytes = context::buffering_limits("pubsub::publish", |l| l.max_payload_bytes)?;
    let topic = channel("pubsub::publish", topic)?;
    let payload = to_json("pubsub::publish: payload", payload, max_bytes)?;
    emit("pubsub::publish", Emit::Publish { topic, payload })
}

fn send(queue: &str, payload: &Dynamic, opts: &Map) -> Result<(), HostError> {
    const CALL: &str = "queue::send";
    let max_bytes = context::buffering_limits(CALL, |l| l.max_payload_bytes)?;
    let queue = channel(CALL, queue)?;
    let payload = to_json("queue::send: payload", payload, max_bytes)?;
    check_options(CALL, opts, &["delay", "idempotency_key"])?;
    let delay = match opts.get("delay").filter(|v| !v.is_unit()) {
        Some(v) => Some(seconds(CALL, "delay", v)?).filter(|d| !d.is_zero()),
        None => None,
    };
    let idempotency_key = opt_string(CALL, "idempotency_key", opts.get("idempotency_key"))?;
    if let Some(key) = &idempotency_key {
        shared::check_data_name("idempotency_key", key, MAX_IDEMPOTENCY_KEY)
            .map_err(|e| HostError::refused(format!("{CALL}: {e}")))?;
    }
    emit(
        CALL,
        Emit::Send {
            queue,
            payload,
            delay,
            idempotency_key,
        },
    )
}

fn invoke_async(script: &str, payload: &Dynamic) -> Result<(), HostError> {
    const CALL: &str = "invoke_async";
    let cx = context::current(CALL)?;
    let _span = tracing::info_span!("host.invoke_async", app = %cx.app).entered();
    let script = script_name(CALL, script)?;
    let payload = to_json(
        "invoke_async: payload",
        payload,
        cx.limits().max_payload_bytes,
    )?;
    // A typo should fail here, where the script can see it, not later in the dispatcher.
    // A version that does not compile still exists: its event fails like any failed run.
    match cx.runner.load(&cx.app, &script) {
        Ok(_) | Err(Loaded::Broken { .. }) => {}
        Err(Loaded::Missing(e)) => return Err(missing(CALL, &script, e)),
    }
    emit(CALL, Emit::InvokeAsync { script, payload })
}

fn missing(call: &'static str, script: &ScriptName, e: ExecError) -> HostError {
    match e {
        ExecError::Store(source) => HostError::backend(call, source),
        _ => HostError::refused(format!("{call}: script '{script}' does not exist")),
    }
}

fn invoke(ctx: &NativeCallContext, script: &str, payload: &Dynamic) -> HostResult<Dynamic> {
    const CALL: &str = "invoke";
    let cx = context::current(CALL)?;
    let _span = tracing::info_span!("host.invoke", app = %cx.app).entered();
    let script = script_name(CALL, script)?;
    let payload = to_json("invoke: payload", payload, cx.limits().max_payload_bytes)?;
    let event = callee_event(&cx, &script, payload);
    let max_depth = cx.limits().max_invoke_depth;
    // The outer `Err` is a callee that could not be loaded, the inner one its run's error.
    let ran = context::nested_invoke(
        &cx,
        &script,
        max_depth,
        || -> Result<HostResult<Dynamic>, HostError> {
            let compiled = match cx.runner.load(&cx.app, &script) {
                Ok(compiled) => compiled,
                Err(Loaded::Missing(e)) => return Err(missing(CALL, &script, e)),
                Err(Loaded::Broken { error, .. }) => {
                    return Err(HostError::refused(format!(
                        "invoke: script '{script}' does not compile: {error}"
                    )));
                }
            };
            let mut scope = input::scope_for(&InvocationInput::Event(event));
            Ok(ctx
                .engine()
                .eval_ast_with_scope::<Dynamic>(&mut scope, &compiled.ast))
        },
        |ran| matches!(ran, Ok(Ok(_))),
    )?;
    match ran? {
        Ok(value) => Ok(value),
        Err(err) => {
            if err.is_catchable() {
                // The callee's own error, with its line, said to come from the call; a
                // thrown value stays what `catch` receives.
                Err(EvalAltResult::ErrorInFunctionCall(
                    format!("invoke({script})"),
                    String::new(),
                    err,
                    ctx.call_position(),
                )
                .into())
            } else {
                Err(err)
            }
        }
    }
}

/// What the callee sees as `event`: kind `invoke`, the payload, attempt 1.
fn callee_event(cx: &Current, script: &ScriptName, payload: serde_json::Value) -> Event {
    let now = Utc::now();
    Event {
        id: EventId::new(),
        app: cx.app.clone(),
        kind: EventKind::Invoke,
        script: Some(script.clone()),
        trigger: None,
        source: None,
        payload,
        attempt: 1,
        max_attempts: 1,
        scheduled_at: now,
        created_at: now,
        lease: None,
        trace: None,
    }
}
