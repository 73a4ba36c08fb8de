//! Text rules that the OpenAPI schema states as `pattern`s and the server
//! checks with the very same expression, so the two cannot disagree.
//!
//! The expressions use only what ECMA-262 (JSON Schema), Python's `re`
//! (schemathesis) and [`fancy_regex`] read alike: ASCII classes, bounded
//! repeats and negative lookahead. A schema attribute cannot name a
//! constant, so each schema repeats its pattern as a literal; a test beside
//! each schema type compares the two.

use std::sync::LazyLock;

use fancy_regex::Regex;

/// An http(s) URL on a public host name: ASCII, no user info, no IP
/// literal, a top-level domain of letters that is not `local`,
/// `localhost`, `lan` or `internal`, no punycode (`xn--`, which can
/// disguise one host as another), an optional port up to 65535, and a
/// path, query and fragment of URL characters (anything else
/// percent-encoded).
pub const PUBLIC_HTTP_URL: &str = r"^[Hh][Tt][Tt][Pp][Ss]?://(?![^/?#]*[Xx][Nn]--)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?!(?:[Ll][Oo][Cc][Aa][Ll](?:[Hh][Oo][Ss][Tt])?|[Ll][Aa][Nn]|[Ii][Nn][Tt][Ee][Rr][Nn][Aa][Ll])(?:[:/?#]|$))[A-Za-z]{2,63}(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(?:/[/A-Za-z0-9._~!$&'()*+,;=:@%-]*)?(?:\?[/?A-Za-z0-9._~!$&'()*+,;=:@%-]*)?(?:#[/?A-Za-z0-9._~!$&'()*+,;=:@%-]*)?$";

/// An email address in plain ASCII: 1 to 64 printable characters other
/// than `@` and space, `@`, and a domain of two or more DNS labels.
/// (The schema adds `maxLength: 254`.)
pub const EMAIL: &str = r"^[!-?A-~]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$";

static PUBLIC_HTTP_URL_RE: LazyLock<Regex> = LazyLock::new(|| compiled(PUBLIC_HTTP_URL));
static EMAIL_RE: LazyLock<Regex> = LazyLock::new(|| compiled(EMAIL));

#[allow(clippy::expect_used)] // a constant of this module, compiled by its tests
fn compiled(pattern: &str) -> Regex {
    Regex::new(pattern).expect("the module's patterns compile")
}

/// Whether `text` matches [`PUBLIC_HTTP_URL`]. A text the matcher gives up
/// on (its backtracking limit) does not match.
pub fn is_public_http_url(text: &str) -> bool {
    PUBLIC_HTTP_URL_RE.is_match(text).unwrap_or(false)
}

/// Whether `text` matches [`EMAIL`].
pub fn is_email(text: &str) -> bool {
    EMAIL_RE.is_match(text).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls() {
        for ok in [
            "https://hooks.example.com/shop",
            "HTTP://Images.Example.COM:8080/a/b.png?x=1&y=%20#top",
            "http://a.bc",
            "https://cdn-1.example.co.uk:65535/",
            "http://example.com:0/",
        ] {
            assert!(is_public_http_url(ok), "{ok}");
        }
        for bad in [
            "HTTP://0.AA*",
            "http://127.0.0.1/",
            "http://93.184.216.34/x.jpg",
            "http://[::1]/",
            "http://localhost/",
            "http://printer.local/",
            "http://db.internal:5432/",
            "http://router.lan",
            "http://intranet/",
            "http://user@example.com/",
            "http://example.com:65536/",
            "http://xn--80ak6aa92e.com/",
            "http://example.com/ä",
            "http://example.com/a b",
            "http://-a.example.com/",
            "ftp://example.com/",
            "https://example.com.",
            " https://example.com/",
            "https://example.com/\n",
        ] {
            assert!(!is_public_http_url(bad), "{bad}");
        }
    }

    #[test]
    fn emails() {
        for ok in ["ada@example.com", "A.B+tag@Sub.Example.io", "x@a.b"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            " ada@example.com",
            "ada@example.com\n",
            "ada@-x.com",
            "ada@example..com",
            "ädä@example.com",
            "ada@exämple.com",
            "a@b@example.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
        assert!(!is_email(&format!("{}@example.com", "a".repeat(65))));
    }
}
