//! `[admin]`: where the health and metrics server listens. Loopback unless the operator says
//! otherwise: the endpoints have no authentication.

use std::net::SocketAddr;
use std::path::Path;

use toml::Spanned;

use super::Validator;
use crate::config::model::AdminConfig;
use crate::config::raw::RawAdmin;

/// Where `[admin]` listens when it names neither `listen` nor `socket`.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

impl Validator<'_> {
    pub(super) fn admin(&mut self, raw: &Spanned<RawAdmin>) -> Option<AdminConfig> {
        let raw = raw.get_ref();
        let allow_remote = raw.allow_remote.as_ref().is_some_and(|v| *v.get_ref());
        match (&raw.listen, &raw.socket) {
            (Some(_), Some(socket)) => {
                self.bad(
                    "admin.socket",
                    socket,
                    "set either `listen` or `socket`, not both",
                );
                None
            }
            (None, Some(socket)) => {
                if let Some(flag) = &raw.allow_remote {
                    self.bad(
                        "admin.allow_remote",
                        flag,
                        "`allow_remote` is not used with `socket` (a unix socket is local)",
                    );
                }
                let path = Path::new(socket.get_ref());
                if !path.is_absolute() {
                    self.bad(
                        "admin.socket",
                        socket,
                        "must be an absolute path, e.g. /run/secret-rotator/admin.sock",
                    );
                    return None;
                }
                Some(AdminConfig::Socket(path.to_path_buf()))
            }
            (Some(listen), None) => {
                let addr = self.admin_address(listen)?;
                if !addr.ip().is_loopback() && !allow_remote {
                    self.bad(
                        "admin.listen",
                        listen,
                        format!(
                            "{addr} is not a loopback address; the admin endpoints have no \
                             authentication: set `allow_remote = true` to listen on it anyway"
                        ),
                    );
                    return None;
                }
                Some(AdminConfig::Listen(addr))
            }
            (None, None) => Some(AdminConfig::Listen(
                DEFAULT_LISTEN
                    .parse()
                    .expect("the default admin address parses"),
            )),
        }
    }

    fn admin_address(&mut self, listen: &Spanned<String>) -> Option<SocketAddr> {
        match listen.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.bad(
                    "admin.listen",
                    listen,
                    "must be an IP address and port, e.g. \"127.0.0.1:9464\" or \"[::1]:9464\"",
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::{parse, AdminConfig};

    use crate::config::validate::test_support::{NoEnvironment, VAULT};

    /// The `[admin]` table's lines (after `[vault]` on line 1 and `[admin]` on line 2) and what
    /// comes of them: the setting, or the error's `(key, line, fragment)`.
    fn check(admin: &str, expected: Result<AdminConfig, (&str, usize, &str)>) {
        let text = format!("{VAULT}[admin]\n{admin}");
        let got = parse(&text, "test.toml", &NoEnvironment);
        match (&got, &expected) {
            (Ok(config), Ok(want)) if config.admin.as_ref() == Some(want) => {}
            (Err(errors), Err((key, line, fragment)))
                if errors.errors.len() == 1
                    && errors.errors[0].key == *key
                    && errors.errors[0].line == *line
                    && errors.errors[0].message.contains(fragment) => {}
            _ => panic!("\n--- [admin]\n{admin}\n--- expected {expected:?}\n--- got {got:?}"),
        }
    }

    fn listen(addr: &str) -> AdminConfig {
        AdminConfig::Listen(addr.parse().unwrap())
    }

    #[test]
    fn admin_listens_on_loopback_unless_remote_is_allowed() {
        check("", Ok(listen("127.0.0.1:9464")));
        check(
            "listen = \"127.0.0.1:9100\"\n",
            Ok(listen("127.0.0.1:9100")),
        );
        check("listen = \"[::1]:9464\"\n", Ok(listen("[::1]:9464")));
        check(
            "listen = \"0.0.0.0:9464\"\n",
            Err(("admin.listen", 3, "not a loopback address")),
        );
        check(
            "listen = \"192.0.2.7:9464\"\n",
            Err(("admin.listen", 3, "allow_remote = true")),
        );
        check(
            "listen = \"0.0.0.0:9464\"\nallow_remote = true\n",
            Ok(listen("0.0.0.0:9464")),
        );
        check(
            "listen = \"localhost:9464\"\n",
            Err(("admin.listen", 3, "must be an IP address and port")),
        );
        check(
            "listen = \"127.0.0.1\"\n",
            Err(("admin.listen", 3, "must be an IP address and port")),
        );
    }

    #[test]
    fn admin_may_listen_on_a_unix_socket_instead() {
        check(
            "socket = \"/run/secret-rotator/admin.sock\"\n",
            Ok(AdminConfig::Socket(PathBuf::from(
                "/run/secret-rotator/admin.sock",
            ))),
        );
        check(
            "socket = \"admin.sock\"\n",
            Err(("admin.socket", 3, "must be an absolute path")),
        );
        check(
            "listen = \"127.0.0.1:9464\"\nsocket = \"/run/a.sock\"\n",
            Err(("admin.socket", 4, "not both")),
        );
        check(
            "socket = \"/run/a.sock\"\nallow_remote = true\n",
            Err(("admin.allow_remote", 4, "not used with `socket`")),
        );
        check("port = 9464\n", Err(("admin.port", 3, "unknown")));
    }

    #[test]
    fn admin_is_off_unless_configured() {
        let config = parse(VAULT, "test.toml", &NoEnvironment).unwrap();
        assert_eq!(config.admin, None);
    }
}
