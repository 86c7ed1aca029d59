//! Redaction of URLs and values that may be URLs, for text that people and logs see.
//!
//! Invariant: pure, and conservative. When the shape of the text is unclear, more is hidden, not
//! less: a message that says less is a nuisance, a password in a log is an incident.

/// What stands in for a removed part.
const HIDDEN: &str = "***";

/// `text` with the user info and the query and fragment of a URL replaced by `***`; the scheme,
/// host, port and path stay, so the operator can still tell which address is meant.
///
/// `https://root:hunter2@vault:8200/v1?token=abc` becomes `https://***@vault:8200/v1?***`. Text
/// without a scheme is treated the same way (`root:hunter2@vault` becomes `***@vault`), so it is
/// safe to pass any value that may hold a URL: text without '@', '?' or '#' comes back unchanged.
pub fn redact_url(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    let (before, after) = match rest.find(['?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let before = match before.rfind('@') {
        // A password may hold a '/', so the user info ends at the last '@', not at the first '/'.
        Some(at) => format!("{HIDDEN}{}", &before[at..]),
        // An '@' only after a '?' or '#': if nothing says where a host ends, the part before may
        // be user info with an unescaped '?' or '#' in its password.
        None if after.contains('@') && !before.contains('/') => HIDDEN.to_string(),
        None => before.to_string(),
    };
    let after = match after.chars().next() {
        Some(mark) => format!("{mark}{HIDDEN}"),
        None => String::new(),
    };
    format!("{scheme}{before}{after}")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn user_info_query_and_fragment_are_hidden_and_the_host_stays() {
        let cases = [
            ("https://vault:8200", "https://vault:8200"),
            (
                "https://vault:8200/v1/sys/health",
                "https://vault:8200/v1/sys/health",
            ),
            (
                "https://root:hunter2@vault:8200/x",
                "https://***@vault:8200/x",
            ),
            ("https://root@vault", "https://***@vault"),
            (
                "https://hooks.example/in?token=abc&x=1",
                "https://hooks.example/in?***",
            ),
            (
                "https://hooks.example/in#access_token=abc",
                "https://hooks.example/in#***",
            ),
            ("https://a:b@h/p?q=1#f", "https://***@h/p?***"),
            ("https://root:pa/ss@vault/x", "https://***@vault/x"),
            ("https://root:p?ss@vault", "https://***?***"),
            ("root:hunter2@vault:8200", "***@vault:8200"),
            ("ftp://u:p@files", "ftp://***@files"),
            ("7 fortnights", "7 fortnights"),
            ("apps/shop", "apps/shop"),
            ("", ""),
        ];
        for (text, expected) in cases {
            assert_eq!(redact_url(text), expected, "redact_url({text:?})");
        }
    }
}
