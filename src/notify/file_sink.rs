//! The `file` sink: render the secret into a file for consumers that read files, as Vault Agent
//! and consul-template do, then optionally run a command (reload the consumer).
//!
//! Rendering ([`render`]) is pure. Writing ([`write_atomically`]) replaces the file in one rename:
//! a reader sees the old content or the new, never a partial or empty file, and the file is never
//! wider than its configured mode, not even for a moment. The rendered bytes live in `Zeroizing`
//! buffers; no error or log line carries a value, only field names and paths.

use std::collections::BTreeMap;
use std::fs::{File, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};
use secrecy::zeroize::Zeroizing;

use super::delivery::Delivery;
use super::exec_sink::{ExecEvent, ExecSink};
use crate::config::{FileFormat, Sink};
use crate::secret::SecretFields;

/// Why a secret could not be rendered. Names fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the secret has no field `{0}`")]
    MissingField(String),
    #[error("field `{field}` gives the environment name `{name}`, which is not valid (empty, or starts with a digit); set env_prefix")]
    EnvName { field: String, name: String },
    #[error("fields `{first}` and `{second}` both give the environment name `{name}`")]
    EnvNameClash {
        first: String,
        second: String,
        name: String,
    },
    #[error("the value of field `{0}` holds a single quote, a backslash, a newline or a NUL, which an env file cannot carry safely; use format \"json\" or \"field\"")]
    EnvValue(String),
}

/// Why the file could not be written. Names paths, users and groups, never values.
#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("no user named `{0}`")]
    UnknownUser(String),
    #[error("no group named `{0}`")]
    UnknownGroup(String),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FileSinkError {
    /// Input and lookup errors need the operator; an IO error (full disk, a directory that is
    /// not there yet) may pass.
    pub fn retryable(&self) -> bool {
        matches!(self, FileSinkError::Io { .. })
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileSinkError {
    let path = path.to_path_buf();
    move |source| FileSinkError::Io {
        action,
        path,
        source,
    }
}

/// Renders `fields` in `format`:
/// - `Field(name)`: that field's value, bare: no quotes, no trailing newline.
/// - `Json`: all fields as one JSON object of strings, pretty-printed, with a trailing newline.
/// - `Env { prefix }`: one `NAME=value` line per field, in field-name order. `NAME` is the prefix
///   and the field name upper-cased with every character other than A-Z and 0-9 turned into `_`.
///   A value of letters, digits and `_-.:/+=@,%^` is written bare; any other in single quotes,
///   which shells, systemd's `EnvironmentFile=` and dotenv readers all take literally. A value
///   that holds a single quote, a backslash, a newline or a NUL is refused: no one quoting is read
///   the same way by all of them.
pub fn render(
    format: &FileFormat,
    fields: &SecretFields,
) -> Result<Zeroizing<Vec<u8>>, RenderError> {
    match format {
        FileFormat::Field(name) => {
            let value = fields
                .expose(name)
                .ok_or_else(|| RenderError::MissingField(name.clone()))?;
            Ok(Zeroizing::new(value.as_bytes().to_vec()))
        }
        FileFormat::Json => {
            let map: BTreeMap<&str, &str> = fields
                .keys()
                .map(|key| (key, fields.expose(key).unwrap_or_default()))
                .collect();
            // Room for the worst case (every byte escaped as \u00XX), so that the buffer never
            // grows: growing would leave an unzeroed copy behind.
            let room = map
                .iter()
                .map(|(k, v)| 6 * (k.len() + v.len()) + 16)
                .sum::<usize>()
                + 4;
            let mut out = Zeroizing::new(Vec::with_capacity(room));
            serde_json::to_writer_pretty(&mut *out, &map).expect("a map of strings serialises");
            out.push(b'\n');
            Ok(out)
        }
        FileFormat::Env { prefix } => {
            let mut names: BTreeMap<String, &str> = BTreeMap::new();
            let mut lines = Vec::new();
            for field in fields.keys() {
                let name = env_name(prefix, field);
                if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                    return Err(RenderError::EnvName {
                        field: field.to_string(),
                        name,
                    });
                }
                if let Some(first) = names.insert(name.clone(), field) {
                    return Err(RenderError::EnvNameClash {
                        first: first.to_string(),
                        second: field.to_string(),
                        name,
                    });
                }
                lines.push((name, field));
            }
            let room = lines
                .iter()
                .map(|(name, field)| {
                    name.len() + fields.expose(field).unwrap_or_default().len() + 4
                })
                .sum();
            let mut out = Zeroizing::new(Vec::with_capacity(room));
            for (name, field) in lines {
                let value = fields.expose(field).unwrap_or_default();
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                if value.bytes().all(is_bare) {
                    out.extend_from_slice(value.as_bytes());
                } else if value.contains(['\'', '\\', '\n', '\r', '\0']) {
                    return Err(RenderError::EnvValue(field.to_string()));
                } else {
                    out.push(b'\'');
                    out.extend_from_slice(value.as_bytes());
                    out.push(b'\'');
                }
                out.push(b'\n');
            }
            Ok(out)
        }
    }
}

/// `prefix` + the field name upper-cased, every character other than A-Z and 0-9 as `_`.
pub fn env_name(prefix: &str, field: &str) -> String {
    let mapped = field.chars().map(|c| {
        let c = c.to_ascii_uppercase();
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            c
        } else {
            '_'
        }
    });
    prefix.chars().chain(mapped).collect()
}

/// Bytes an env file value may hold without quotes, for every reader: no whitespace, no quote,
/// no `$`, backtick, `#`, `~` or other character a shell or dotenv would interpret.
fn is_bare(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"_-.:/+=@,%^".contains(&byte)
}

/// Replaces `path` with `bytes` atomically:
/// 1. a temporary file in the same directory, created owner-only (`mode & 0o700`);
/// 2. the bytes written; the owner and group set; then the exact `mode`, so the file is never
///    readable by anyone its final owner, group and mode would not allow;
/// 3. fsync, rename over `path`, fsync of the directory, so that after a crash the name holds the
///    old content or the new one.
///
/// On any error the temporary file is removed and `path` is left as it was. `owner` and `group`
/// are names or numeric ids; `None` keeps the daemon's own.
pub fn write_atomically(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<(), FileSinkError> {
    let uid = owner.map(resolve_user).transpose()?;
    let gid = group.map(resolve_group).transpose()?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();

    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode & 0o700))
        .tempfile_in(dir)
        .map_err(io_error("create a temporary file in", dir))?;
    let temp_path = temp.path().to_path_buf();
    temp.write_all(bytes)
        .map_err(io_error("write", &temp_path))?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(temp.as_file(), uid.map(Uid::as_raw), gid.map(Gid::as_raw))
            .map_err(io_error("set the owner of", &temp_path))?;
    }
    // After chown, which may clear bits, and exact: the umask narrowed the mode at creation.
    temp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(io_error("set the mode of", &temp_path))?;
    temp.as_file()
        .sync_all()
        .map_err(io_error("sync", &temp_path))?;
    temp.persist(path)
        .map_err(|error| io_error("rename a temporary file onto", path)(error.error))?;
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync the directory", dir))?;
    Ok(())
}

/// Whether `path` is a regular file holding exactly `expected`, with exactly `mode`, and the
/// given owner and group when set. Any doubt (missing, unreadable, an unknown user) is `false`,
/// which leads to a rewrite.
///
/// The file's content is compared with what would be written now, rather than keeping a sidecar
/// `.version` file: no second file to keep in step (a crash between the two writes would leave
/// them disagreeing), and it also catches a file edited by hand, restored from a backup or
/// rendered in a format the config no longer asks for.
pub fn holds_content(
    path: &Path,
    expected: &[u8],
    mode: u32,
    owner: Option<&str>,
    group: Option<&str>,
) -> bool {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let owner_ok = match owner.map(resolve_user) {
        None => true,
        Some(Ok(uid)) => metadata.uid() == uid.as_raw(),
        Some(Err(_)) => false,
    };
    let group_ok = match group.map(resolve_group) {
        None => true,
        Some(Ok(gid)) => metadata.gid() == gid.as_raw(),
        Some(Err(_)) => false,
    };
    if !metadata.is_file()
        || metadata.mode() & 0o7777 != mode
        || !owner_ok
        || !group_ok
        || metadata.len() != expected.len() as u64
    {
        return false;
    }
    match std::fs::read(path) {
        Ok(content) => Zeroizing::new(content).as_slice() == expected,
        Err(_) => false,
    }
}

fn resolve_user(user: &str) -> Result<Uid, FileSinkError> {
    if let Ok(id) = user.parse::<u32>() {
        return Ok(Uid::from_raw(id));
    }
    match User::from_name(user) {
        Ok(Some(found)) => Ok(found.uid),
        _ => Err(FileSinkError::UnknownUser(user.to_string())),
    }
}

fn resolve_group(group: &str) -> Result<Gid, FileSinkError> {
    if let Ok(id) = group.parse::<u32>() {
        return Ok(Gid::from_raw(id));
    }
    match Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid),
        _ => Err(FileSinkError::UnknownGroup(group.to_string())),
    }
}

/// One configured `file` dependent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSink {
    pub path: PathBuf,
    pub format: FileFormat,
    pub mode: u32,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Run after the file is in place.
    pub exec: Option<ExecSink>,
}

impl FileSink {
    /// The sink of a `file` dependent; `None` for other types.
    pub fn from_config(sink: &Sink) -> Option<FileSink> {
        match sink {
            Sink::File {
                path,
                format,
                mode,
                owner,
                group,
                exec,
                exec_timeout,
                ..
            } => Some(FileSink {
                path: path.clone(),
                format: format.clone(),
                mode: *mode,
                owner: owner.clone(),
                group: group.clone(),
                exec: exec
                    .as_ref()
                    .map(|command| ExecSink::new(command.clone(), *exec_timeout)),
            }),
            _ => None,
        }
    }

    /// Whether the file already holds `fields` as this sink would render them (see
    /// [`holds_content`]); checked at start-up to decide whether to rewrite it.
    pub fn holds_current(&self, fields: &SecretFields) -> bool {
        match render(&self.format, fields) {
            Ok(bytes) => holds_content(
                &self.path,
                &bytes,
                self.mode,
                self.owner.as_deref(),
                self.group.as_deref(),
            ),
            Err(_) => false,
        }
    }

    /// Renders `fields` and writes the file (blocking IO).
    pub fn write(&self, fields: &SecretFields) -> Result<(), FileSinkError> {
        let bytes = render(&self.format, fields)?;
        write_atomically(
            &self.path,
            &bytes,
            self.mode,
            self.owner.as_deref(),
            self.group.as_deref(),
        )
    }

    /// Writes the file, then runs `exec` if configured. Delivered when both succeed. For events
    /// that change the live secret (rotated, rolled back), and at start-up when the file does
    /// not hold the current secret; writing the same secret again is harmless.
    pub async fn deliver(
        &self,
        dependent: &str,
        fields: &SecretFields,
        event: &ExecEvent<'_>,
    ) -> Delivery {
        let sink = self.clone();
        let fields = fields.clone();
        let written = tokio::task::spawn_blocking(move || sink.write(&fields)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(dependent, path = %self.path.display(), error = %error, "file dependent not written");
                return Delivery::Failed {
                    retryable: error.retryable(),
                    reason: error.to_string(),
                };
            }
            Err(error) => {
                return Delivery::Failed {
                    retryable: true,
                    reason: format!("the write did not finish: {error}"),
                }
            }
        }
        tracing::info!(dependent, path = %self.path.display(), "file dependent written");
        match &self.exec {
            None => Delivery::Delivered,
            Some(exec) => exec.run(dependent, event).await.delivery,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(prefix: &str) -> FileFormat {
        FileFormat::Env {
            prefix: prefix.to_string(),
        }
    }

    /// (what, format, fields, expected output or error)
    #[test]
    fn render_cases() {
        let token = || SecretFields::new().with("token", "abc.DEF-123");
        let cases: Vec<(&str, FileFormat, SecretFields, Result<&str, RenderError>)> = vec![
            (
                "one field, bare, no newline",
                FileFormat::Field("token".into()),
                token(),
                Ok("abc.DEF-123"),
            ),
            (
                "a field that is not there",
                FileFormat::Field("password".into()),
                token(),
                Err(RenderError::MissingField("password".into())),
            ),
            (
                "all fields as JSON",
                FileFormat::Json,
                SecretFields::new().with("b", "2").with("a", "say \"hi\"\n"),
                Ok("{\n  \"a\": \"say \\\"hi\\\"\\n\",\n  \"b\": \"2\"\n}\n"),
            ),
            (
                "env names upper-cased, other characters as _, with a prefix",
                env("APP_"),
                SecretFields::new()
                    .with("access-token", "t0k3n")
                    .with("client.id", "a/b+c="),
                Ok("APP_ACCESS_TOKEN=t0k3n\nAPP_CLIENT_ID=a/b+c=\n"),
            ),
            (
                "env values with spaces, quotes or $ are single-quoted",
                env(""),
                SecretFields::new().with("json", "{\"a\": \"$HOME\"}"),
                Ok("JSON='{\"a\": \"$HOME\"}'\n"),
            ),
            (
                "an empty env value",
                env(""),
                SecretFields::new().with("empty", ""),
                Ok("EMPTY=\n"),
            ),
            (
                "an env value with a newline is refused",
                env(""),
                SecretFields::new().with("pem", "line1\nline2"),
                Err(RenderError::EnvValue("pem".into())),
            ),
            (
                "an env value with a single quote is refused",
                env(""),
                SecretFields::new().with("p", "it's"),
                Err(RenderError::EnvValue("p".into())),
            ),
            (
                "an env name starting with a digit is refused",
                env(""),
                SecretFields::new().with("1st", "x"),
                Err(RenderError::EnvName {
                    field: "1st".into(),
                    name: "1ST".into(),
                }),
            ),
            (
                "two fields giving one env name are refused",
                env(""),
                SecretFields::new().with("a-b", "x").with("a_b", "y"),
                Err(RenderError::EnvNameClash {
                    first: "a-b".into(),
                    second: "a_b".into(),
                    name: "A_B".into(),
                }),
            ),
        ];
        for (what, format, fields, expected) in cases {
            let got =
                render(&format, &fields).map(|bytes| String::from_utf8(bytes.to_vec()).unwrap());
            assert_eq!(got, expected.map(str::to_string), "case: {what}");
        }
    }

    #[test]
    fn render_errors_never_show_a_value() {
        let fields = SecretFields::new().with("pem", "hunter2\nsecret");
        let error = render(
            &FileFormat::Env {
                prefix: String::new(),
            },
            &fields,
        )
        .unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
    }
}
