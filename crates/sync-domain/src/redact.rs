//! Passwords out of URLs before they are shown (startup line, `config`, errors).

/// Query parameters whose value is a secret: libpq's `password` and
/// `sslpassword`, and any name that says token, secret or key.
pub fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("password")
        || name.contains("passwd")
        || name.contains("secret")
        || name.contains("token")
        || name == "key"
        || name.ends_with("_key")
        || name.ends_with("apikey")
}

/// The URL with the user-info password and every secret query parameter
/// ([`is_secret_parameter`]) replaced by `***`. A string that does not parse
/// as a URL is shown only if nothing in it looks like a credential.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw.trim()) else {
        let lower = raw.to_ascii_lowercase();
        let looks_secret = raw.contains('@')
            || lower.split(['?', '&', ';', ' ']).any(|part| {
                part.split_once('=')
                    .is_some_and(|(k, _)| is_secret_parameter(k))
            });
        return if looks_secret {
            "***".to_owned()
        } else {
            raw.to_owned()
        };
    };
    if url.password().is_some() {
        // Fails only for URLs that cannot have user info, which then have no password.
        let _ = url.set_password(Some("***"));
    }
    if url.query_pairs().any(|(k, _)| is_secret_parameter(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_parameter(&k) {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(&pairs);
    }
    url.to_string()
}

/// Whether [`redact_url`] would hide something in `raw`.
fn shows_a_secret(raw: &str) -> bool {
    match url::Url::parse(raw) {
        Ok(url) => {
            url.password().is_some() || url.query_pairs().any(|(k, _)| is_secret_parameter(&k))
        }
        Err(_) => redact_url(raw) != raw,
    }
}

/// `text` (an error message, a log line) with every URL in it that holds a
/// password or secret parameter passed through [`redact_url`]; other URLs are
/// left as written. A URL runs from its `scheme://` to the next space, quote,
/// bracket or parenthesis (how reqwest, hyper and oauth2 print them).
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme: the ASCII letters, digits, `+`, `-`, `.` before `://`.
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '(' | ')' | '<' | '>' | '`')
            })
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        if start == at {
            // No scheme: not a URL; keep the `://` and go on.
            out.push_str(&rest[at..at + 3]);
            rest = &rest[at + 3..];
            continue;
        }
        let candidate = &rest[start..end];
        if shows_a_secret(candidate) {
            out.push_str(&redact_url(candidate));
        } else {
            out.push_str(candidate);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_info_password_is_hidden() {
        assert_eq!(
            redact_url("postgres://chronos:hunter2@db:5432/chronos"),
            "postgres://chronos:***@db:5432/chronos"
        );
    }

    #[test]
    fn a_password_in_the_query_string_is_hidden() {
        let shown = redact_url("postgres://chronos@db/chronos?password=hunter2&sslmode=require");
        assert_eq!(
            shown,
            "postgres://chronos@db/chronos?password=***&sslmode=require"
        );
    }

    #[test]
    fn other_secret_parameters_are_hidden() {
        let shown =
            redact_url("https://hooks.example.com/base?token=abc123&sslpassword=p&region=eu");
        assert!(
            !shown.contains("abc123") && !shown.contains("=p&"),
            "{shown}"
        );
        assert!(shown.contains("region=eu"), "{shown}");
    }

    #[test]
    fn a_url_without_secrets_is_unchanged() {
        assert_eq!(
            redact_url("https://www.googleapis.com/calendar/v3"),
            "https://www.googleapis.com/calendar/v3"
        );
    }

    #[test]
    fn an_unparsable_string_with_credentials_is_hidden_entirely() {
        assert_eq!(redact_url("postgres://u:hunter2@[bad"), "***");
        assert_eq!(redact_url("not a url password=hunter2"), "***");
        assert_eq!(redact_url("not-a-url"), "not-a-url");
    }

    #[test]
    fn urls_inside_a_message_are_redacted() {
        let message = "error sending request for url (http://g:apipw@127.0.0.1:9/v3/x?password=qpw&a=1): connection refused";
        let shown = redact_urls_in(message);
        assert!(
            !shown.contains("apipw") && !shown.contains("qpw"),
            "{shown}"
        );
        assert!(
            shown.starts_with("error sending request for url (http://g:***@127.0.0.1:9/v3/x?"),
            "{shown}"
        );
        assert!(shown.ends_with("): connection refused"), "{shown}");
    }

    #[test]
    fn a_message_without_urls_is_unchanged() {
        for text in ["", "connection refused", "odd :// text"] {
            assert_eq!(redact_urls_in(text), text);
        }
        assert_eq!(
            redact_urls_in("two: https://a:x@h/ and postgres://u:y@db/c"),
            "two: https://a:***@h/ and postgres://u:***@db/c"
        );
        // Left as written, not normalised, when nothing in it is secret.
        assert_eq!(
            redact_urls_in("see HTTP://Example.COM:80 now"),
            "see HTTP://Example.COM:80 now"
        );
    }
}
