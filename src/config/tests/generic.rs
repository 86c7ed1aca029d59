//! The `exec` and `http` providers' tables: every malformed one reported at its key and line,
//! and well-formed ones read into the model.

use super::*;

/// Lines 1-5 of every case: `[vault]`, one credential, and the provider table's header on line 5.
macro_rules! provider_case {
    ($table:literal, $body:literal) => {
        concat!(
            r#"vault = { address = "https://v:8200", auth = { method = "token" } }
[[credentials]]
name = "app"
path = "apps/app"
[credentials."#,
            $table,
            "]\n",
            $body
        )
    };
}

/// One malformed exec table per row: (what is wrong, the file, the errors in file order).
const MALFORMED_EXEC: &[(&str, &str, Expected)] = &[
    (
        "an empty exec table",
        provider_case!("exec", ""),
        &[
            ("credentials[0].exec.mint", 5, "missing required key `mint`"),
            (
                "credentials[0].exec.verify",
                5,
                "missing required key `verify`",
            ),
            (
                "credentials[0].exec.revoke",
                5,
                "missing required key `revoke`",
            ),
            (
                "credentials[0].exec.fields",
                5,
                "missing required key `fields`",
            ),
        ],
    ),
    (
        "a program without a name, a timeout past the call deadline, a field twice",
        provider_case!(
            "exec",
            r#"mint = []
verify = ["/bin/verify"]
revoke = ["/bin/revoke"]
verify_revoked = [" "]
timeout = "2m"
fields = ["token", "token"]
"#
        ),
        &[
            ("credentials[0].exec.mint", 6, "must name a program"),
            (
                "credentials[0].exec.verify_revoked",
                9,
                "must name a program",
            ),
            ("credentials[0].exec.timeout", 10, "must be at most 60s"),
            ("credentials[0].exec.fields[1]", 11, "listed twice"),
        ],
    ),
    (
        "no fields, a zero timeout, an unknown key",
        provider_case!(
            "exec",
            r#"mint = ["/bin/mint"]
verify = ["/bin/verify"]
revoke = ["/bin/revoke"]
timeout = "0s"
fields = []
"#
        ),
        &[
            ("credentials[0].exec.timeout", 9, "longer than zero"),
            ("credentials[0].exec.fields", 10, "at least one field"),
        ],
    ),
    (
        "a field name that is not a name",
        provider_case!(
            "exec",
            r#"mint = ["/bin/mint"]
verify = ["/bin/verify"]
revoke = ["/bin/revoke"]
fields = ["api token"]
shell = "sh -c"
"#
        ),
        &[("credentials[0].exec.shell", 10, "unknown field `shell`")],
    ),
];

/// One malformed http table per row.
const MALFORMED_HTTP: &[(&str, &str, Expected)] = &[
    (
        "an empty http table",
        provider_case!("http", ""),
        &[
            ("credentials[0].http.mint", 5, "missing required key `mint`"),
            (
                "credentials[0].http.verify",
                5,
                "missing required key `verify`",
            ),
            (
                "credentials[0].http.revoke",
                5,
                "missing required key `revoke`",
            ),
        ],
    ),
    (
        "placeholders a step cannot know, or that name nothing",
        provider_case!(
            "http",
            r#"parents = { admin = { path = "ops/admin", key = "token" } }
[credentials.http.mint]
method = "POST"
url = "https://api.example.com/tokens/{{current.token}}"
headers = { Authorization = "Bearer {{parent.root}}" }
body = '{"name": "{{nmae}}"}'
fields = { token = "/data/token" }
[credentials.http.verify]
method = "GET"
url = "https://api.example.com/check?until={{expires_at_unix}}"
headers = { Authorization = "Bearer {{current.secret}}" }
[credentials.http.revoke]
method = "DELETE"
url = "https://api.example.com/tokens/{{current.token}}"
headers = { Authorization = "Bearer {{parent.admin}}" }
"#
        ),
        &[
            (
                "credentials[0].http.mint.url",
                9,
                "{{current.token}} is not known when minting",
            ),
            (
                "credentials[0].http.mint.headers.Authorization",
                10,
                "{{parent.root}} names no parent; add it to `parents` (configured: admin)",
            ),
            (
                "credentials[0].http.mint.body",
                11,
                "unknown placeholder `{{nmae}}`",
            ),
            (
                "credentials[0].http.verify.url",
                15,
                "{{expires_at_unix}} is only known when minting",
            ),
            (
                "credentials[0].http.verify.headers.Authorization",
                16,
                "{{current.secret}} is not a field of the credential; mint.fields names: token",
            ),
        ],
    ),
    (
        "a placeholder in the host, an unknown method, bad statuses, mint keys elsewhere",
        provider_case!(
            "http",
            r#"[credentials.http.mint]
method = "FETCH"
url = "https://{{credential}}.example.com/tokens"
ok = [200, 700]
fields = { token = "data.token" }
expires_at = "/data/expires_at"
[credentials.http.verify]
method = "GET"
url = "ftp://api.example.com/check"
ok = [200]
reject = [200, 401]
[credentials.http.revoke]
method = "DELETE"
url = "https://api.example.com/tokens"
fields = { token = "/data/token" }
headers = { "Bad Header" = "x", X-Multi = "a\nb" }
"#
        ),
        &[
            (
                "credentials[0].http.mint.method",
                7,
                "unknown method `FETCH`",
            ),
            (
                "credentials[0].http.mint.url",
                8,
                "placeholders may only follow the host",
            ),
            (
                "credentials[0].http.mint.ok[1]",
                9,
                "an HTTP status is 100 to 599, got 700",
            ),
            (
                "credentials[0].http.mint.fields.token",
                10,
                "invalid JSON pointer `data.token`",
            ),
            (
                "credentials[0].http.verify.url",
                14,
                "must start with http:// or https://",
            ),
            (
                "credentials[0].http.verify.reject",
                16,
                "status 200 is listed in both `ok` and `reject`",
            ),
            (
                "credentials[0].http.revoke.fields",
                20,
                "`fields` is not used by the revoke request",
            ),
            (
                "credentials[0].http.revoke.headers.Bad Header",
                21,
                "invalid header name `Bad Header`",
            ),
            (
                "credentials[0].http.revoke.headers.X-Multi",
                21,
                "must be one line",
            ),
        ],
    ),
    (
        "a parent kept in the credential's own secret, a mint without fields",
        provider_case!(
            "http",
            r#"parents = { self = { path = "apps/app", key = "token" }, "bad name" = { path = "ops/x", key = "k" } }
timeout = "90s"
[credentials.http.mint]
method = "POST"
url = "https://api.example.com/tokens"
[credentials.http.verify]
method = "GET"
url = "https://api.example.com/check"
[credentials.http.revoke]
method = "DELETE"
url = "https://api.example.com/tokens"
"#
        ),
        &[
            (
                "credentials[0].http.parents.self",
                6,
                "this credential's own secret",
            ),
            (
                "credentials[0].http.parents.bad name",
                6,
                "invalid name `bad name`",
            ),
            ("credentials[0].http.timeout", 7, "must be at most 60s"),
            (
                "credentials[0].http.mint.fields",
                8,
                "missing required key `fields`",
            ),
        ],
    ),
];

#[test]
fn malformed_generic_provider_tables_are_reported_at_the_right_key_and_line() {
    for (what, toml, expected) in MALFORMED_EXEC.iter().chain(MALFORMED_HTTP) {
        eprintln!("case: {what}");
        check(toml, expected);
    }
}

#[test]
fn an_exec_table_reads_into_the_model_with_its_defaults() {
    let config = parse_ok(
        provider_case!(
            "exec",
            r#"mint = ["/usr/local/lib/rotate", "mint"]
verify = ["/usr/local/lib/rotate", "verify"]
revoke = ["/usr/local/lib/rotate", "revoke"]
fields = ["token", "id"]
"#
        ),
        &FakeEnvironment::new(),
    );
    let provider = &*config.credentials[0].provider();
    assert!(provider.automatic());
    assert_eq!(
        provider,
        &ProviderConfig::Exec(ExecProviderConfig {
            mint: vec!["/usr/local/lib/rotate".into(), "mint".into()],
            verify: vec!["/usr/local/lib/rotate".into(), "verify".into()],
            revoke: vec!["/usr/local/lib/rotate".into(), "revoke".into()],
            verify_revoked: None,
            timeout: Duration::from_secs(30),
            fields: vec!["token".into(), "id".into()],
            credentials_expire: false,
        })
    );
}

#[test]
fn an_http_table_reads_into_the_model_and_expires_when_mint_names_the_expiry() {
    let config = parse_ok(
        provider_case!(
            "http",
            r#"parents = { access_token = { path = "bigcommerce/abc123/store-api", key = "access_token" } }
[credentials.http.mint]
method = "post"
url = "https://api.bigcommerce.com/stores/abc123/v3/storefront/api-token"
headers = { X-Auth-Token = "{{parent.access_token}}" }
body = '{"channel_id": 1, "expires_at": {{ expires_at_unix }}}'
fields = { token = "/data/token" }
[credentials.http.verify]
method = "POST"
url = "https://store-abc123.mybigcommerce.com/graphql"
headers = { Authorization = "Bearer {{current.token}}" }
ok = [200]
reject = [401]
[credentials.http.revoke]
method = "DELETE"
url = "https://api.bigcommerce.com/stores/abc123/v3/storefront/api-token"
headers = { X-Auth-Token = "{{parent.access_token}}", Sf-Api-Token = "{{current.token}}" }
"#
        ),
        &FakeEnvironment::new(),
    );
    let ProviderConfig::Http(http) = &*config.credentials[0].provider() else {
        panic!("an http provider");
    };
    assert!(http.credentials_expire, "the mint body names the expiry");
    assert_eq!(http.mint.method, "POST");
    assert_eq!(http.mint.ok, Vec::<u16>::new(), "any 2xx");
    assert_eq!(http.mint.reject, [401, 403]);
    assert_eq!(http.mint.retry, [429, 502, 503, 504]);
    assert_eq!(http.verify.reject, [401]);
    assert_eq!(
        http.fields,
        [("token".to_string(), "/data/token".to_string())]
    );
    assert_eq!(
        http.parents,
        [(
            "access_token".to_string(),
            VaultField {
                secret: KvPath {
                    mount: "secret".into(),
                    path: "bigcommerce/abc123/store-api".into()
                },
                key: "access_token".into()
            }
        )]
    );
    assert_eq!(http.timeout, Duration::from_secs(30));
}

/// The commented example at the end of `config/example.toml`, uncommented, is valid.
#[test]
fn the_commented_example_of_generic_providers_is_valid() {
    let text = include_str!("../../../config/example.toml");
    let (before, example) = text
        .split_once("## generic providers example\n")
        .expect("the example's marker");
    let uncommented: String = example
        .lines()
        .map(|line| line.strip_prefix('#').unwrap_or(line))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .map(|line| format!("{line}\n"))
        .collect();
    let env = FakeEnvironment::new().with_var(
        "CREDENTIALS_DIRECTORY",
        "/run/credentials/secret-rotator.service",
    );
    let config = parse_ok(&format!("{before}{uncommented}"), &env);
    let generic = config.credential("storefront-generic").unwrap();
    let ProviderConfig::Http(http) = &*generic.provider() else {
        panic!("an http provider");
    };
    assert!(http.credentials_expire);
    let partner = config.credential("partner-api-key").unwrap();
    let ProviderConfig::Exec(exec) = &*partner.provider() else {
        panic!("an exec provider");
    };
    assert_eq!(exec.fields, ["key_id", "key"]);
    assert!(exec.verify_revoked.is_some());
}
