//! The Rhai engine with its limits and host modules, usable without the thread pool.
//!
//! What must stay true: one engine per set of engine-level limits, built once (the
//! server's at start; an app whose overrides change the call depth or a string, array or
//! map size gets its own, built on its first run and kept); no filesystem (imports
//! resolve only to the running app's scripts, through the run's context), no `eval`,
//! never the `unchecked` feature; every run gets its operation budget and deadline
//! through the run's state (`run_state::RunScope`), so the progress callback can stop it
//! and say whether time or operations ran out. Compiling is the server engine's job; a
//! compiled script runs on any of them (they register the same functions).
//!
//! An inline try (`Sandbox::try_inline`) runs on the calling thread, a runtime worker with
//! its small stack, under a budget that no script can turn into a long stall or a deep
//! stack: at most `INLINE_MAX_OPERATIONS` operations and `INLINE_MAX_TIME`, calls nested
//! `INLINE_CALL_DEPTH` deep, a host context only for the calls that buffer effects. It
//! keeps only an answer (with its effects) or a script error; a limit, a call it may not
//! make or a panic discards everything it did, its buffered effects too.
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use rhai::{AST, Dynamic, Engine, EvalAltResult, Scope};
use shared::{
    CompileError, Effects, FailureKind, InvocationInput, LogLevel, LogLine, ScriptChecker,
    ScriptFailure, ScriptOutput,
};

use crate::cache::Compiled;
use crate::context::Host;
use crate::limits::{Limits, human_duration};
use crate::modules::AppModules;
use crate::run_state::{self, RunScope, Termination};
use crate::{host, input, nesting, output};

/// Engines for other engine-level limits kept at most; past it the cache starts over
/// (runs in progress keep theirs).
const MAX_ENGINES: usize = 64;

/// The operation budget of an inline try: a few hundred microseconds of the slowest
/// operations, and values it builds nest at most about a thousand levels (see
/// `Limits::stack_bytes`: ~256 KiB of stack to walk them).
const INLINE_MAX_OPERATIONS: u64 = 4096;
/// The wall clock of an inline try, read every 16 operations.
pub(crate) const INLINE_MAX_TIME: Duration = Duration::from_millis(1);
/// Nested script function calls in an inline try (~10 KiB of stack each).
const INLINE_CALL_DEPTH: usize = 4;
/// Inline tries only when scripts are compiled at most this deep (the evaluation of an
/// expression recurses as deep as it nests).
const INLINE_MAX_EXPR_DEPTH: usize = 64;

/// The engine-level limits: what needs an engine of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EngineLimits {
    max_call_depth: usize,
    max_string_bytes: usize,
    max_array_len: usize,
    max_map_len: usize,
}

impl EngineLimits {
    fn of(limits: &Limits) -> Self {
        EngineLimits {
            max_call_depth: limits.max_call_depth,
            max_string_bytes: limits.max_string_bytes,
            max_array_len: limits.max_array_len,
            max_map_len: limits.max_map_len,
        }
    }
}

/// The engine and the limits it runs scripts under.
pub struct Sandbox {
    engine: Arc<Engine>,
    limits: Arc<Limits>,
    /// Engines for runs whose engine-level limits differ from the server's.
    others: RwLock<HashMap<EngineLimits, Arc<Engine>>>,
    /// The server's engine with `INLINE_CALL_DEPTH`, built on the first inline try; `None`
    /// when the server's limits allow no inline try.
    inline: OnceLock<Option<Engine>>,
}

/// What one run produced: its log and its response or failure.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub logs: Vec<LogLine>,
    pub result: Result<ScriptOutput, ScriptFailure>,
}

/// An engine with every host module, under `limits`' engine-level limits.
fn build_engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    engine.set_module_resolver(AppModules);
    engine.disable_symbol("eval");
    engine.set_max_call_levels(limits.max_call_depth);
    engine.set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth);
    // Rhai reads 0 as "no limit": a size of 0 is kept at 1.
    engine.set_max_string_size(limits.max_string_bytes.max(1));
    engine.set_max_array_size(limits.max_array_len.max(1));
    engine.set_max_map_size(limits.max_map_len.max(1));
    let fallback_max_ops = limits.max_operations;
    engine.on_progress(move |ops| run_state::check_progress(ops, fallback_max_ops));
    engine.on_print(|text| run_state::push_log(LogLevel::Print, text));
    engine.on_debug(|text, _source, _pos| run_state::push_log(LogLevel::Debug, text));
    output::register(&mut engine);
    nesting::register(&mut engine);
    host::register_all(&mut engine);
    engine
}

impl Sandbox {
    pub fn new(limits: &Limits) -> Self {
        Sandbox {
            engine: Arc::new(build_engine(limits)),
            limits: Arc::new(limits.clone()),
            others: RwLock::new(HashMap::new()),
            inline: OnceLock::new(),
        }
    }

    /// The server's limits: what a run without overrides gets.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn shared_limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Compile without running.
    ///
    /// # Errors
    /// The first compile error, with its 1-based line and column.
    pub fn compile(&self, source: &str) -> Result<AST, CompileError> {
        self.engine.compile(source).map_err(|e| {
            let pos = e.position();
            CompileError {
                line: pos.line().unwrap_or(1),
                column: pos.position().unwrap_or(1),
                message: e.err_type().to_string(),
            }
        })
    }

    /// The engine for a run under `limits`.
    fn engine_for(&self, limits: &Limits) -> Arc<Engine> {
        let key = EngineLimits::of(limits);
        if key == EngineLimits::of(&self.limits) {
            return Arc::clone(&self.engine);
        }
        let cached = self
            .others
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(engine) = cached {
            return engine;
        }
        let built = Arc::new(build_engine(&Limits {
            max_call_depth: key.max_call_depth,
            max_string_bytes: key.max_string_bytes,
            max_array_len: key.max_array_len,
            max_map_len: key.max_map_len,
            ..(*self.limits).clone()
        }));
        let mut others = self.others.write().unwrap_or_else(|e| e.into_inner());
        if others.len() >= MAX_ENGINES {
            others.clear();
        }
        Arc::clone(others.entry(key).or_insert(built))
    }

    /// Run a compiled script once on this thread, under this sandbox's limits, with no
    /// host context (data calls fail as "not available here").
    pub fn run(&self, ast: &AST, input: &InvocationInput) -> RunOutput {
        self.eval(ast, input::scope_for(input), &self.limits, None)
            .0
    }

    /// Run a compiled script once on this thread under `limits`, with `host` as its
    /// context: its output, and its effects when it succeeded.
    pub(crate) fn run_in(
        &self,
        compiled: &Compiled,
        input: &InvocationInput,
        limits: &Limits,
        host: Option<Host>,
    ) -> (RunOutput, Effects) {
        let variables = input::scope_of_run(input, compiled.reads_request);
        self.eval(&compiled.ast, variables, limits, host)
    }

    /// Try a run of `compiled` on this thread (a runtime worker) under the inline budget
    /// (the module doc; its time counts from `started`), with `host` for the calls that
    /// only buffer effects: its output when it answered or failed as a script error, and
    /// its effects when it answered; `None` when it must run on a script thread (a limit
    /// of the try, a call it may not make, a panic; nothing it did is kept, its buffered
    /// effects are dropped), or when `limits` need an engine of their own.
    pub(crate) fn try_inline(
        &self,
        compiled: &Compiled,
        input: &InvocationInput,
        limits: &Limits,
        host: Option<Box<Host>>,
        started: Instant,
    ) -> Option<(RunOutput, Effects)> {
        if EngineLimits::of(limits) != EngineLimits::of(&self.limits) {
            return None;
        }
        // The budget counts from `started` (the caller's clock read), or from the end of
        // what the try had to do first that may take a while: building this engine (the
        // first try), the `request` map.
        let mut started = started;
        let engine = match self.inline.get() {
            Some(engine) => engine,
            None => {
                let engine = self.inline.get_or_init(|| {
                    (self.limits.max_expr_depth <= INLINE_MAX_EXPR_DEPTH).then(|| {
                        build_engine(&Limits {
                            max_call_depth: self.limits.max_call_depth.min(INLINE_CALL_DEPTH),
                            ..(*self.limits).clone()
                        })
                    })
                });
                started = Instant::now();
                engine
            }
        }
        .as_ref()?;
        // Only references go into the closure and only the result comes out: nothing
        // large is moved through the unwinding machinery. A panic drops the scope (if it
        // was entered) on the way out, and its buffered effects with it.
        let mut scope = None;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut variables = input::scope_of_run(input, compiled.reads_request);
            if compiled.reads_request {
                started = Instant::now();
            }
            scope = Some(RunScope::enter_inline(
                limits,
                INLINE_MAX_OPERATIONS,
                INLINE_MAX_TIME,
                started,
                host,
            ));
            match engine.eval_ast_with_scope::<Dynamic>(&mut variables, &compiled.ast) {
                Ok(value) => output::to_output(value, limits.max_output_bytes),
                Err(err) => Err(failure(limits, &err)),
            }
        }))
        .ok()?;
        let ended = scope?.end();
        let kept = ended.stopped.is_none()
            && result
                .as_ref()
                .err()
                .is_none_or(|f| f.kind == FailureKind::Error);
        if !kept {
            // Discarded: its buffered effects go with it.
            if let Some(host) = ended.host {
                host.abandon();
            }
            return None;
        }
        let effects = ended
            .host
            .map(|h| h.finish(result.is_ok()))
            .unwrap_or_default();
        Some((
            RunOutput {
                logs: ended.logs,
                result,
            },
            effects,
        ))
    }

    /// Evaluate `ast` with `variables` as its scope, under `limits`, with `host`.
    fn eval(
        &self,
        ast: &AST,
        mut variables: Scope<'static>,
        limits: &Limits,
        host: Option<Host>,
    ) -> (RunOutput, Effects) {
        let engine = self.engine_for(limits);
        let scope = RunScope::enter(limits, host.map(Box::new));
        let evaluated = engine.eval_ast_with_scope::<Dynamic>(&mut variables, ast);
        let result = match (evaluated, run_state::stopped()) {
            (_, Some(Termination::TooDeep(what))) => Err(ScriptFailure {
                kind: FailureKind::LimitExceeded,
                message: nesting::too_deep_message(what),
            }),
            (Ok(value), _) => output::to_output(value, limits.max_output_bytes),
            (Err(err), _) => Err(failure(limits, &err)),
        };
        let (logs, effects) = scope.finish(result.is_ok());
        (RunOutput { logs, result }, effects)
    }
}

/// A Rhai error as the app's owner sees it: limits in plain words, everything else with
/// Rhai's message and position.
fn failure(limits: &Limits, err: &EvalAltResult) -> ScriptFailure {
    let limit = |message: String| ScriptFailure {
        kind: FailureKind::LimitExceeded,
        message,
    };
    match innermost(err) {
        EvalAltResult::ErrorTerminated(token, _) => match token.clone().try_cast::<Termination>() {
            Some(Termination::TooDeep(what)) => limit(nesting::too_deep_message(what)),
            Some(Termination::Timeout) => ScriptFailure {
                kind: FailureKind::Timeout,
                message: format!(
                    "wall-clock limit of {} exceeded",
                    human_duration(limits.timeout)
                ),
            },
            _ => limit("operation limit exceeded".to_owned()),
        },
        EvalAltResult::ErrorTooManyOperations(_) => limit("operation limit exceeded".to_owned()),
        EvalAltResult::ErrorStackOverflow(_) => limit("call depth limit exceeded".to_owned()),
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            let what = what.to_ascii_lowercase();
            let message = if what.contains("string") {
                "string size limit exceeded"
            } else if what.contains("array") {
                "array size limit exceeded"
            } else if what.contains("map") {
                "map size limit exceeded"
            } else {
                "data size limit exceeded"
            };
            limit(message.to_owned())
        }
        EvalAltResult::ErrorRuntime(value, pos) if nesting::too_deep(value) => ScriptFailure {
            kind: FailureKind::Error,
            message: format!(
                "{} ({pos})",
                nesting::too_deep_message("the thrown value cannot be shown")
            ),
        },
        _ => ScriptFailure {
            kind: FailureKind::Error,
            // One line: Rhai puts "in call to function ..." on a line of its own.
            message: err.to_string().replace('\n', " "),
        },
    }
}

impl ScriptChecker for Sandbox {
    fn check(&self, source: &str) -> Result<(), CompileError> {
        self.compile(source).map(|_| ())
    }
}

/// The error under any "in call to function" / "in module" wrappers.
fn innermost(err: &EvalAltResult) -> &EvalAltResult {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
        | EvalAltResult::ErrorInModule(_, inner, _) => innermost(inner),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use shared::HttpRequest;

    use super::*;

    /// Compile and run on a thread with the script threads' stack size.
    fn run_with(limits: Limits, source: &str, req: HttpRequest) -> RunOutput {
        let source = source.to_owned();
        std::thread::Builder::new()
            .stack_size(16 * 1024 * 1024)
            .spawn(move || {
                let sandbox = Sandbox::new(&limits);
                let ast = sandbox.compile(&source).expect("test script compiles");
                sandbox.run(&ast, &InvocationInput::Http(req))
            })
            .unwrap()
            .join()
            .unwrap()
    }

    fn run(source: &str) -> RunOutput {
        run_with(Limits::default(), source, HttpRequest::default())
    }

    fn failure(out: &RunOutput) -> &ScriptFailure {
        out.result.as_ref().expect_err("the run should fail")
    }

    fn json_body(out: &RunOutput) -> serde_json::Value {
        let ok = out.result.as_ref().expect("the run should succeed");
        serde_json::from_slice(&ok.body).unwrap()
    }

    #[test]
    fn hello_world_returns_plain_text() {
        let out = run(r#""hello world""#);
        let ok = out.result.unwrap();
        assert_eq!(ok.status, 200);
        assert_eq!(ok.body.as_ref(), b"hello world");
        assert_eq!(ok.headers, [("content-type".into(), output::TEXT.into())]);
    }

    #[test]
    fn a_map_is_returned_as_json() {
        let out = run(r#"#{ name: "pi", n: 3, list: [1, 2.5, true, ()] }"#);
        assert_eq!(
            json_body(&out),
            serde_json::json!({"name": "pi", "n": 3, "list": [1, 2.5, true, null]})
        );
    }

    #[test]
    fn response_sets_status_headers_and_a_json_body() {
        let out =
            run(r#"response(201, #{ id: 7 }, #{ "X-Id": "7", "Cache-Control": "no-store" })"#);
        let ok = out.result.unwrap();
        assert_eq!(ok.status, 201);
        assert!(ok.headers.contains(&("x-id".into(), "7".into())));
        assert!(
            ok.headers
                .contains(&("cache-control".into(), "no-store".into()))
        );
        assert!(
            ok.headers
                .contains(&("content-type".into(), output::JSON.into()))
        );
        assert_eq!(ok.body.as_ref(), br#"{"id":7}"#);
    }

    #[test]
    fn a_bad_response_status_is_a_script_error_with_its_line() {
        let out = run("let x = 1;\nresponse(1000, \"no\")");
        let f = failure(&out);
        assert_eq!(f.kind, FailureKind::Error);
        assert!(f.message.contains("100..=599"), "{}", f.message);
        assert!(f.message.contains("line 2"), "{}", f.message);
    }

    #[test]
    fn request_fields_reach_the_script() {
        let req = HttpRequest {
            method: "POST".into(),
            path: "/users/42".into(),
            params: BTreeMap::from([("id".into(), "42".into())]),
            query: BTreeMap::from([("sort".into(), "asc".into())]),
            headers: [("x-token", "abc")].into(),
            body: r#"{"name":"ada"}"#.into(),
        };
        let source = r#"#{ method: request.method, path: request.path, id: request.params.id,
            sort: request.query.sort, token: request.headers["x-token"], body: request.body,
            name: request.json.name }"#;
        let out = run_with(Limits::default(), source, req);
        assert_eq!(
            json_body(&out),
            serde_json::json!({"method": "POST", "path": "/users/42", "id": "42", "sort": "asc",
                "token": "abc", "body": r#"{"name":"ada"}"#, "name": "ada"})
        );
    }

    #[test]
    fn a_body_that_is_not_json_gives_unit_json() {
        let req = HttpRequest {
            body: "not json".into(),
            ..HttpRequest::default()
        };
        let out = run_with(Limits::default(), "request.json == ()", req);
        assert_eq!(out.result.unwrap().body.as_ref(), b"true");
    }

    #[test]
    fn the_request_is_a_constant() {
        let out = run(r#"request.method = "x"; 1"#);
        assert_eq!(failure(&out).kind, FailureKind::Error);
    }

    #[test]
    fn print_debug_and_log_lines_are_captured_in_order() {
        let out = run(
            r#"print("one"); log::info("two"); debug("three"); log::warn(4);
            log::error("five"); ()"#,
        );
        let lines: Vec<(LogLevel, &str)> = out
            .logs
            .iter()
            .map(|l| (l.level, l.message.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (LogLevel::Print, "one"),
                (LogLevel::Info, "two"),
                (LogLevel::Debug, "\"three\""),
                (LogLevel::Warn, "4"),
                (LogLevel::Error, "five"),
            ]
        );
        assert_eq!(out.result.unwrap().status, 204);
    }

    #[test]
    fn captured_logs_stop_at_the_log_limit() {
        let limits = Limits {
            max_log_bytes: 100,
            ..Limits::default()
        };
        let out = run_with(
            limits,
            r#"for i in 0..100 { print("0123456789"); } "done""#,
            HttpRequest::default(),
        );
        assert_eq!(out.logs.len(), 11);
        assert_eq!(out.logs[10].message, run_state::LOG_TRUNCATED);
        assert!(out.result.is_ok());
    }

    #[test]
    fn an_infinite_loop_is_stopped_by_the_operation_limit() {
        let limits = Limits {
            max_operations: 100_000,
            ..Limits::default()
        };
        let out = run_with(limits, "loop {}", HttpRequest::default());
        let f = failure(&out);
        assert_eq!(
            (f.kind, f.message.as_str()),
            (FailureKind::LimitExceeded, "operation limit exceeded")
        );
    }

    #[test]
    fn with_a_huge_operation_limit_the_wall_clock_stops_the_loop() {
        let limits = Limits {
            max_operations: u64::MAX,
            timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let started = Instant::now();
        let out = run_with(
            limits,
            "let i = 0; loop { i += 1; }",
            HttpRequest::default(),
        );
        let f = failure(&out);
        assert_eq!(f.kind, FailureKind::Timeout);
        assert_eq!(f.message, "wall-clock limit of 200ms exceeded");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn sleep_ends_at_the_wall_clock_limit_however_long_it_asks_for() {
        // Rhai's own `sleep` would block for 50 s or forever: ours must win over it.
        for source in [
            "sleep(1e9)",
            "sleep(50)",
            "sleep(50.0)",
            "try { sleep(50) } catch { 1 }",
        ] {
            let limits = Limits {
                timeout: Duration::from_millis(200),
                ..Limits::default()
            };
            let out = run_with(limits, source, HttpRequest::default());
            let f = failure(&out);
            assert_eq!(f.kind, FailureKind::Timeout, "{source}");
            assert_eq!(f.message, "wall-clock limit of 200ms exceeded", "{source}");
        }
    }

    #[test]
    fn zero_negative_and_nan_sleeps_return_at_once() {
        let out = run(
            r#"sleep(0); sleep(-5); sleep(-1.5); sleep(parse_float("NaN")); sleep(0.001); "awake""#,
        );
        assert_eq!(out.result.unwrap().body.as_ref(), b"awake");
    }

    #[test]
    fn a_loop_cannot_catch_its_own_limit() {
        let limits = Limits {
            max_operations: 50_000,
            ..Limits::default()
        };
        let out = run_with(
            limits,
            "try { loop {} } catch { \"escaped\" }",
            HttpRequest::default(),
        );
        assert_eq!(failure(&out).kind, FailureKind::LimitExceeded);
    }

    #[test]
    fn unbounded_recursion_hits_the_call_depth_limit() {
        let out = run("fn f(x) { f(x + 1) } f(0)");
        let f = failure(&out);
        assert_eq!(
            (f.kind, f.message.as_str()),
            (FailureKind::LimitExceeded, "call depth limit exceeded")
        );
    }

    #[test]
    fn a_doubling_string_hits_the_string_limit() {
        let out = run(r#"let s = "x"; loop { s += s; }"#);
        let f = failure(&out);
        assert_eq!(f.kind, FailureKind::LimitExceeded);
        assert!(f.message.contains("string"), "{}", f.message);
    }

    #[test]
    fn an_ever_growing_array_hits_the_array_limit() {
        // Rhai re-measures an array after each push, so growing one element at a time is
        // quadratic: a small limit keeps the test fast (the wall clock covers the rest).
        let limits = Limits {
            max_array_len: 1000,
            ..Limits::default()
        };
        let out = run_with(
            limits,
            "let a = []; loop { a.push(1); }",
            HttpRequest::default(),
        );
        let f = failure(&out);
        assert_eq!(f.kind, FailureKind::LimitExceeded);
        assert!(f.message.contains("array"), "{}", f.message);
    }

    #[test]
    fn an_ever_growing_map_hits_the_map_limit_when_the_script_uses_it() {
        let limits = Limits {
            max_map_len: 100,
            ..Limits::default()
        };
        let source = "let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; m.len(); }";
        let out = run_with(limits, source, HttpRequest::default());
        let f = failure(&out);
        assert_eq!(f.kind, FailureKind::LimitExceeded);
        assert!(f.message.contains("map"), "{}", f.message);
    }

    #[test]
    fn a_map_grown_only_by_index_assignment_is_stopped_by_the_operation_limit() {
        // Rhai checks a map's size after method calls and property writes, not after
        // `m[key] = v`; the operation budget bounds such a loop instead.
        let limits = Limits {
            max_map_len: 100,
            max_operations: 200_000,
            ..Limits::default()
        };
        let source = "let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }";
        let out = run_with(limits, source, HttpRequest::default());
        assert_eq!(failure(&out).kind, FailureKind::LimitExceeded);
    }

    #[test]
    fn a_large_response_hits_the_output_limit() {
        let limits = Limits {
            max_output_bytes: 1000,
            ..Limits::default()
        };
        let out = run_with(
            limits,
            r#"let s = "x"; s.pad(2000, "y"); s"#,
            HttpRequest::default(),
        );
        let f = failure(&out);
        assert_eq!(
            (f.kind, f.message.as_str()),
            (
                FailureKind::LimitExceeded,
                "response body exceeds 1000 bytes"
            )
        );
    }

    #[test]
    fn a_thrown_value_is_an_error_with_its_message_and_position() {
        let out = run("let x = 1;\n\nif x == 1 { throw \"boom\"; }");
        let f = failure(&out);
        assert_eq!(f.kind, FailureKind::Error);
        assert_eq!(f.message, "Runtime error: boom (line 3, position 13)");
    }

    #[test]
    fn an_error_inside_a_function_names_the_function_on_one_line() {
        let out = run("fn check(x) {\n    throw \"boom\";\n}\n\ncheck(1)");
        let f = failure(&out);
        assert_eq!(f.kind, FailureKind::Error);
        assert_eq!(
            f.message,
            "Runtime error: boom (line 2, position 5) in call to function 'check' (line 5, position 1)"
        );
    }

    #[test]
    fn eval_is_refused_at_compile_time() {
        let sandbox = Sandbox::new(&Limits::default());
        let err = sandbox.compile("let x = 1;\neval(\"40 + 2\")").unwrap_err();
        assert_eq!((err.line, err.column), (2, 1));
        assert!(
            err.message.contains("'eval' is disabled"),
            "{}",
            err.message
        );
    }

    #[test]
    fn import_fails_without_touching_the_filesystem() {
        let dir = std::env::temp_dir().join(format!("picloud-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.rhai"), "export const secret = 1;").unwrap();
        let source = format!("import \"{}/x\" as m; m::secret", dir.display());
        let out = run(&source);
        std::fs::remove_dir_all(&dir).unwrap();
        let f = failure(&out);
        assert_eq!(f.kind, FailureKind::Error);
        assert!(f.message.contains("not found"), "{}", f.message);
        let out = run(r#"import "x" as m; 1"#);
        assert!(
            failure(&out).message.contains("module 'x' not found"),
            "{}",
            failure(&out).message
        );
    }

    #[test]
    fn a_compile_error_gives_its_line_and_column() {
        let sandbox = Sandbox::new(&Limits::default());
        let err = sandbox.compile("let a = 1;\nlet b = ;\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 9));
        assert!(!err.message.is_empty());
    }

    #[test]
    fn a_too_deep_expression_is_a_compile_error() {
        let sandbox = Sandbox::new(&Limits {
            max_expr_depth: 10,
            ..Limits::default()
        });
        let source = format!("{}1{}", "(".repeat(50), ")".repeat(50));
        assert!(sandbox.compile(&source).is_err());
    }

    #[test]
    fn host_modules_work() {
        let out = run(r#"#{
                parsed: json::parse(`{"a":[1,2]}`).a[1],
                text: json::stringify(#{ b: true }),
                b64: base64::encode("hello"),
                back: base64::decode("aGVsbG8="),
                sha: crypto::sha256("abc"),
                mac: crypto::hmac_sha256("Jefe", "what do ya want for nothing?"),
                u4: uuid::v4().len(),
                u7: uuid::v7().len(),
                now: time::now().len() > 20,
                ms: time::now_ms() > 1700000000000,
            }"#);
        assert_eq!(
            json_body(&out),
            serde_json::json!({
                "parsed": 2, "text": r#"{"b":true}"#, "b64": "aGVsbG8=", "back": "hello",
                "sha": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                "mac": "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                "u4": 36, "u7": 36, "now": true, "ms": true,
            })
        );
    }

    #[test]
    fn host_module_errors_are_script_errors() {
        for source in [r#"json::parse("{nope")"#, r#"base64::decode("!!!")"#] {
            let out = run(source);
            let f = failure(&out);
            assert_eq!(f.kind, FailureKind::Error, "{source}");
        }
        let out = run(r#"json::parse("{nope")"#);
        assert!(failure(&out).message.contains("invalid JSON"));
    }

    /// An inline try of `source` on this thread (a test thread's 2 MiB stack, like a
    /// runtime worker's), under `limits`.
    fn try_inline_with(limits: &Limits, source: &str, req: HttpRequest) -> Option<RunOutput> {
        let sandbox = Sandbox::new(limits);
        let ast = sandbox.compile(source).expect("test script compiles");
        let compiled = Compiled::new(1, ast, source);
        sandbox
            .try_inline(
                &compiled,
                &InvocationInput::Http(req),
                limits,
                None,
                Instant::now(),
            )
            .map(|(out, effects)| {
                assert!(effects.is_empty(), "no host context, no effects");
                out
            })
    }

    fn try_inline(source: &str) -> Option<RunOutput> {
        try_inline_with(&Limits::default(), source, HttpRequest::default())
    }

    #[test]
    fn a_pure_script_is_answered_by_its_inline_try_with_its_log() {
        let out = try_inline(
            r#"print("hi"); let id = uuid::v4(); #{ n: crypto::sha256("a").len(),
            at: time::now_ms() > 0, id: id.len(), path: request.path }"#,
        )
        .expect("kept");
        assert_eq!(
            json_body(&out),
            serde_json::json!({"n": 64, "at": true, "id": 36, "path": ""})
        );
        assert_eq!(out.logs.len(), 1);
        assert_eq!(out.logs[0].message, "hi");
        // A script error is an answer too: the same on a script thread.
        let out = try_inline(r#"print("x"); throw "boom""#).expect("kept");
        assert_eq!(failure(&out).kind, FailureKind::Error);
        assert!(
            failure(&out).message.contains("boom"),
            "{}",
            failure(&out).message
        );
    }

    #[test]
    fn a_host_call_that_needs_the_app_or_waits_discards_the_inline_try() {
        for source in [
            r#"print("before"); kv::get("x")"#,
            r#"let v = (); try { v = kv::get("x") } catch { v = "caught" } v"#,
            r#"kv::set("a", 1); "written""#,
            r#"blob::delete("a"); 1"#,
            r#"pubsub::publish("t", 1); 1"#,
            r#"queue::send("q", 1); 1"#,
            r#"invoke("other", #{}); 1"#,
            r#"invoke_async("other", #{}); 1"#,
            r#"config::get("k")"#,
            r#"secrets::get("k")"#,
            r#"realtime::token(#{ topics: ["t"] })"#,
            r#"email::send(#{ to: "a@b.c", subject: "s", text: "t" }); 1"#,
            r#"http::get("https://example.com/")"#,
            r#"import "helpers" as h; 1"#,
            "sleep(0.5); 1",
            r#"try { sleep(0.5) } catch { } 1"#,
        ] {
            let started = Instant::now();
            assert!(try_inline(source).is_none(), "{source}");
            assert!(started.elapsed() < Duration::from_millis(400), "{source}");
        }
    }

    #[test]
    fn an_inline_try_stops_at_its_budget_and_its_call_depth() {
        let limits = Limits {
            max_operations: u64::MAX,
            timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        for source in [
            "loop {}",
            "let x = 0; while true { x += 1 } x",
            // Heavy operations: the clock stops it even within its operation budget.
            r#"let s = "x"; for i in 0..18 { s += s } for i in 0..3000 { s.len(); crypto::sha256(s); } 1"#,
            "fn f(n) { if n == 0 { 0 } else { 1 + f(n - 1) } } f(20)",
            // A value nested deeper than responses may be.
            "let a = []; for i in 0..150 { a = [a] } a",
        ] {
            let started = Instant::now();
            assert!(
                try_inline_with(&limits, source, HttpRequest::default()).is_none(),
                "{source}"
            );
            assert!(started.elapsed() < Duration::from_millis(400), "{source}");
        }
        // Shallow recursion is kept (a try is also discarded when its thread was held up past
        // the 1 ms budget, as on a loaded machine: one of a few tries is kept).
        let out = (0..20)
            .find_map(|_| try_inline("fn f(n) { if n == 0 { 0 } else { 1 + f(n - 1) } } f(2)"))
            .unwrap();
        assert_eq!(out.result.unwrap().body.as_ref(), b"2");
    }

    #[test]
    fn an_inline_tries_time_counts_from_its_start_or_from_building_its_engine_or_request() {
        let limits = Limits::default();
        let counting = "let x = 0; for i in 0..200 { x += i } x";
        let reading = "let x = 0; for i in 0..200 { x += i } `${request.path}${x}`";
        // Read 50 ms before the try: the budget is already spent unless the try restarted
        // its clock. (A try held up past 1 ms by a loaded machine is discarded too: one
        // of a few is kept.)
        let long_ago = || {
            Instant::now()
                .checked_sub(Duration::from_millis(50))
                .unwrap()
        };
        let tried = |sandbox: &Sandbox, source: &str, started: Instant| {
            let ast = sandbox.compile(source).unwrap();
            let compiled = Compiled::new(1, ast, source);
            let input = InvocationInput::Http(HttpRequest::default());
            sandbox.try_inline(&compiled, &input, &limits, None, started)
        };
        let kept_first = (0..20).any(|_| {
            let fresh = Sandbox::new(&limits);
            tried(&fresh, counting, long_ago()).is_some()
        });
        assert!(
            kept_first,
            "the first try's clock starts after its engine is built"
        );
        let sandbox = Sandbox::new(&limits);
        assert!((0..20).any(|_| tried(&sandbox, counting, Instant::now()).is_some()));
        assert!(tried(&sandbox, counting, long_ago()).is_none());
        assert!(
            (0..20).any(|_| tried(&sandbox, reading, long_ago()).is_some()),
            "the clock starts after the request is built"
        );
    }

    #[test]
    fn an_inline_try_leaves_nothing_behind_on_its_thread() {
        assert!(try_inline(r#"print("lost"); kv::get("x")"#).is_none());
        let out = try_inline(r#""after""#).unwrap();
        assert!(out.logs.is_empty());
        assert!(run_state::remaining().is_none());
        assert!(run_state::stopped().is_none());
        assert!(
            !run_state::refuse_inline(),
            "outside a try nothing is refused"
        );
    }
}
