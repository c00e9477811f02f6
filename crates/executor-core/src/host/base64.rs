//! `base64::encode(text)` and `base64::decode(text)` (standard alphabet, padded).
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rhai::{EvalAltResult, ImmutableString, Module};

pub(super) fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn(
        "encode",
        |text: ImmutableString| -> Result<String, Box<EvalAltResult>> {
            Ok(STANDARD.encode(text.as_bytes()))
        },
    );
    m.set_native_fn("decode", |text: ImmutableString| decode(&text));
    m
}

fn decode(text: &str) -> Result<String, Box<EvalAltResult>> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| "base64::decode: the input is not valid base64")?;
    String::from_utf8(bytes)
        .map_err(|_| "base64::decode: the decoded bytes are not UTF-8 text".into())
}
