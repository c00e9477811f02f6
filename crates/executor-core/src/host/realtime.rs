//! `realtime::token(#{topics: [...], sub: "...", ttl: 300})`: a token that lets a browser
//! subscribe to the app's exposed topics (`shared::realtime`).
//!
//! What must stay true: a token names the run's own app, never another; its life is at
//! most the server's cap (`ExecutorConfig::max_realtime_token_ttl`); the signing key never
//! reaches a span, a log line or an error message.
use rhai::{Array, Dynamic, EvalAltResult, Map, Module};
use shared::ChannelName;
use shared::realtime::{Claims, MAX_SUBJECT_BYTES, mint};

use super::value::{check_options, opt_string, seconds};
use crate::context;
use crate::error::HostError;

const CALL: &str = "realtime::token";
/// Topics one token may name.
pub(crate) const MAX_TOKEN_TOPICS: usize = 64;
/// A token's life when the script gives no `ttl`.
const DEFAULT_TTL_SECS: f64 = 300.0;

type HostResult<T> = Result<T, Box<EvalAltResult>>;

pub(super) fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("token", |opts: Map| -> HostResult<String> {
        Ok(token(&opts)?)
    });
    m
}

fn token(opts: &Map) -> Result<String, HostError> {
    let cx = context::current(CALL)?;
    let _span = tracing::info_span!("host.realtime.token", app = %cx.app).entered();
    check_options(CALL, opts, &["topics", "sub", "ttl"])?;
    let topics = topics(opts.get("topics"))?;
    let sub = opt_string(CALL, "sub", opts.get("sub"))?.unwrap_or_default();
    if sub.len() > MAX_SUBJECT_BYTES {
        return Err(HostError::refused(format!(
            "{CALL}: sub is longer than {MAX_SUBJECT_BYTES} bytes"
        )));
    }
    let ttl = match opts.get("ttl") {
        None => DEFAULT_TTL_SECS,
        Some(value) => seconds(CALL, "ttl", value)?.as_secs_f64(),
    };
    if ttl < 1.0 {
        return Err(HostError::refused(format!(
            "{CALL}: ttl must be at least 1 second"
        )));
    }
    let cap = cx.runner.max_realtime_token_ttl.as_secs_f64().max(1.0);
    let ttl = ttl.min(cap).ceil() as i64;
    let key = cx
        .block_on(cx.store().realtime.key(&cx.app))
        .map_err(|e| HostError::backend(CALL, e))?;
    let claims = Claims {
        app: cx.app.clone(),
        topics,
        sub,
        exp: expiry(chrono::Utc::now(), ttl),
    };
    Ok(mint(&key, &claims))
}

/// A token's `exp` (whole seconds): rounded up, so a token lives at least its `ttl`. Rounded
/// down, a ttl of 1 minted late in a second would leave it a millisecond to live.
fn expiry(now: chrono::DateTime<chrono::Utc>, ttl_secs: i64) -> i64 {
    let started = i64::from(now.timestamp_subsec_nanos() > 0);
    now.timestamp()
        .saturating_add(started)
        .saturating_add(ttl_secs)
}

fn topics(value: Option<&Dynamic>) -> Result<Vec<ChannelName>, HostError> {
    let refused = || {
        HostError::refused(format!(
            "{CALL}: topics must be an array of 1 to {MAX_TOKEN_TOPICS} topic names"
        ))
    };
    let array: Array = value
        .and_then(|v| v.clone().try_cast::<Array>())
        .ok_or_else(refused)?;
    if array.is_empty() || array.len() > MAX_TOKEN_TOPICS {
        return Err(refused());
    }
    let mut topics = Vec::with_capacity(array.len());
    for item in array {
        let raw = item.into_string().map_err(|_| refused())?;
        let topic =
            ChannelName::parse(&raw).map_err(|e| HostError::refused(format!("{CALL}: {e}")))?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    Ok(topics)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::expiry;

    #[test]
    fn a_token_lives_at_least_its_ttl_whenever_in_the_second_it_is_minted() {
        let late = Utc.timestamp_opt(1_000, 999_000_000).unwrap();
        assert_eq!(
            expiry(late, 1),
            1_002,
            "a ttl of 1 at x.999 keeps the token past x+1.999"
        );
        let early = Utc.timestamp_opt(1_000, 1).unwrap();
        assert_eq!(expiry(early, 1), 1_002);
        let exact = Utc.timestamp_opt(1_000, 0).unwrap();
        assert_eq!(expiry(exact, 1), 1_001);
    }
}
