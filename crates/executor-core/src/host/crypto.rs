//! `crypto::sha256(text)` and `crypto::hmac_sha256(key, message)`, as lowercase hex.
//!
//! HMAC (RFC 2104) is `shared::hmac`, shared with realtime tokens; checked here against
//! the RFC 4231 test vectors.
use rhai::{EvalAltResult, ImmutableString, Module};
use sha2::{Digest, Sha256};
pub(crate) use shared::hmac::hmac_sha256;

pub(super) fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn(
        "sha256",
        |text: ImmutableString| -> Result<String, Box<EvalAltResult>> {
            Ok(hex::encode(Sha256::digest(text.as_bytes())))
        },
    );
    m.set_native_fn(
        "hmac_sha256",
        |key: ImmutableString, msg: ImmutableString| -> Result<String, Box<EvalAltResult>> {
            Ok(hex::encode(hmac_sha256(key.as_bytes(), msg.as_bytes())))
        },
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_the_rfc_4231_vectors() {
        let case1 = hmac_sha256(&[0x0b; 20], b"Hi There");
        assert_eq!(
            hex::encode(case1),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let case2 = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(case2),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A key longer than the block size is hashed first.
        let case6 = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(case6),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
