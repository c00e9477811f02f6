//! `email::send(#{to, subject, text, html, from, reply_to})`: an email through the
//! outbox.
//!
//! What must stay true: nothing is sent from the script thread; the validated message is
//! buffered as `Emit::Email` and becomes an outbox row only when the run commits, so a
//! run that throws sends nothing. Every address is checked here, so the mailer never
//! sees a malformed one, and no header can carry a line break. A `from` must be one of
//! the operator's senders (`ExecutorConfig::email_senders`): a script cannot speak for
//! any address the SMTP account happens to be able to send from.
use rhai::{Array, Dynamic, EvalAltResult, Map, Module};
use shared::{EmailMessage, Emit};

use super::value::{check_options, opt_string};
use crate::context;
use crate::error::HostError;

/// Recipients of one message.
const MAX_RECIPIENTS: usize = 50;
/// RFC 5321: an address (path) is at most 254 octets, a local part at most 64.
const MAX_ADDRESS: usize = 254;
const MAX_LOCAL: usize = 64;
const MAX_LABEL: usize = 63;

pub(super) fn module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("send", |msg: Map| -> Result<(), Box<EvalAltResult>> {
        Ok(send(&msg)?)
    });
    m
}

fn send(msg: &Map) -> Result<(), HostError> {
    let cx = context::current("email::send")?;
    let _span = tracing::info_span!("host.email.send", app = %cx.app).entered();
    let message = parse(msg)?;
    if let Some(from) = &message.from
        && !cx
            .runner
            .email_senders
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(from))
    {
        return Err(HostError::refused(format!(
            "email::send: from '{from}' is not an allowed sender; leave it out to send from the default sender"
        )));
    }
    let max = cx.limits().max_payload_bytes;
    let size = serde_json::to_vec(&message).map_or(usize::MAX, |v| v.len());
    if size > max {
        return Err(HostError::refused(format!(
            "email::send: message is larger than {max} bytes"
        )));
    }
    context::buffer_emit("email::send", Emit::Email { message })
}

/// The message as the mailer takes it, or what is wrong with it.
pub(crate) fn parse(msg: &Map) -> Result<EmailMessage, HostError> {
    const CALL: &str = "email::send";
    check_options(
        CALL,
        msg,
        &["to", "subject", "text", "html", "from", "reply_to"],
    )?;
    let to = recipients(msg.get("to"))?;
    let subject = opt_string(CALL, "subject", msg.get("subject"))?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| HostError::refused("email::send: subject is required"))?;
    if subject.chars().any(char::is_control) {
        return Err(HostError::refused(
            "email::send: subject may not contain control characters",
        ));
    }
    let text = opt_string(CALL, "text", msg.get("text"))?;
    let html = opt_string(CALL, "html", msg.get("html"))?;
    if text.is_none() && html.is_none() {
        return Err(HostError::refused("email::send: text or html is required"));
    }
    let from = opt_string(CALL, "from", msg.get("from"))?;
    let reply_to = opt_string(CALL, "reply_to", msg.get("reply_to"))?;
    for address in from.iter().chain(reply_to.iter()) {
        check_address(address)?;
    }
    Ok(EmailMessage {
        to,
        subject,
        text,
        html,
        from,
        reply_to,
    })
}

fn recipients(to: Option<&Dynamic>) -> Result<Vec<String>, HostError> {
    let list: Vec<Dynamic> = match to {
        Some(v) if v.is_string() => vec![v.clone()],
        Some(v) if v.is_array() => v.clone().cast::<Array>(),
        _ => {
            return Err(HostError::refused(
                "email::send: to must be an address or an array of addresses",
            ));
        }
    };
    if list.is_empty() || list.len() > MAX_RECIPIENTS {
        return Err(HostError::refused(format!(
            "email::send: to must have 1 to {MAX_RECIPIENTS} addresses"
        )));
    }
    list.into_iter()
        .map(|v| {
            let address = v.into_string().map_err(|_| {
                HostError::refused("email::send: every address in to must be a string")
            })?;
            check_address(&address)?;
            Ok(address)
        })
        .collect()
}

/// A plain `local@domain` address: dot-atom local part, a domain of letters, digits and
/// hyphens in dot-separated labels. No display names, comments, quoted local parts or
/// IP literals.
fn check_address(address: &str) -> Result<(), HostError> {
    if is_valid_address(address) {
        Ok(())
    } else {
        let shown: String = address
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_ADDRESS)
            .collect();
        Err(HostError::refused(format!(
            "invalid email address: {shown}"
        )))
    }
}

fn is_valid_address(address: &str) -> bool {
    if address.len() > MAX_ADDRESS {
        return false;
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= MAX_LOCAL
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b))
        });
    let domain_ok = !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    local_ok && domain_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_pass_and_malformed_ones_do_not() {
        for ok in [
            "ada@example.com",
            "a.b+tag@mail.example.org",
            "x@localhost",
            "o'hara@ex-ample.io",
        ] {
            assert!(is_valid_address(ok), "{ok}");
        }
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@@example.com",
            ".ada@example.com",
            "a..b@example.com",
            "ada@-example.com",
            "ada@example..com",
            "Ada <ada@example.com>",
            "ada@example.com\r\nBcc: eve@example.com",
            "ada@[127.0.0.1]",
            "a b@example.com",
        ] {
            assert!(!is_valid_address(bad), "{bad:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(!is_valid_address(&long_local));
    }

    #[test]
    fn a_bad_address_is_named_in_the_error_without_control_characters() {
        let err = check_address("not an address\n").unwrap_err();
        assert_eq!(err.to_string(), "invalid email address: not an address");
    }
}
