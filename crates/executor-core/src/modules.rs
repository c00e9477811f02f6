//! `import "helpers" as h;`: a module is the app's own script `helpers`, its active
//! version, evaluated once and cached with that version's compiled entry (so a deploy or
//! an app change drops it with the AST).
//!
//! What must stay true: no filesystem access ever (a name that is not a script name is
//! simply not found); a script only reaches its own app's scripts; a cycle is an error
//! (`import cycle: a -> b -> a`, from the run's import stack), never a hang; messages
//! name the module and say what went wrong in the script, never SQL, paths or addresses.
//! A module's top-level code runs once per version, inside the run that first imports
//! it and under that run's budget.
use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, Shared};
use shared::{ExecError, ScriptName};

use crate::context;
use crate::error::HostError;
use crate::executor::Loaded;
use crate::host::printable;

/// Resolves imports to the running app's scripts; outside a run nothing is found.
pub(crate) struct AppModules;

impl ModuleResolver for AppModules {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        resolve(engine, path).map_err(|e| match e {
            Failure::Host(e) => e.into_script_error(pos),
            Failure::Limit(err) => err,
        })
    }
}

enum Failure {
    Host(HostError),
    /// A limit stopped the module's top-level code: passed on as is (not catchable).
    Limit(Box<EvalAltResult>),
}

impl From<HostError> for Failure {
    fn from(e: HostError) -> Self {
        Failure::Host(e)
    }
}

fn resolve(engine: &Engine, path: &str) -> Result<Shared<Module>, Failure> {
    let not_found = || HostError::refused(format!("module '{}' not found", printable(path)));
    let Ok(cx) = context::current("import") else {
        return Err(not_found().into());
    };
    let _span = tracing::info_span!("host.import", app = %cx.app).entered();
    let Ok(script) = ScriptName::parse(path) else {
        return Err(not_found().into());
    };
    let compiled = match cx.runner.load(&cx.app, &script) {
        Ok(compiled) => compiled,
        Err(Loaded::Missing(ExecError::Store(source))) => {
            return Err(HostError::backend("import", source).into());
        }
        Err(Loaded::Missing(_)) => return Err(not_found().into()),
        Err(Loaded::Broken { error, .. }) => {
            return Err(HostError::refused(format!("module '{script}' failed: {error}")).into());
        }
    };
    if let Some(module) = compiled.module.get() {
        return Ok(Shared::clone(module));
    }
    let evaluated = context::loading_import(&script, || {
        Module::eval_ast_as_new(Scope::new(), &compiled.ast, engine)
    })?;
    match evaluated {
        Ok(module) => {
            let module = Shared::new(module);
            // Two threads may load it at once; either result is the same module.
            let _ = compiled.module.set(Shared::clone(&module));
            Ok(module)
        }
        Err(err) if !err.is_catchable() => Err(Failure::Limit(err)),
        Err(err) => Err(HostError::refused(format!(
            "module '{script}' failed: {}",
            err.to_string().replace('\n', " ")
        ))
        .into()),
    }
}
