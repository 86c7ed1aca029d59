//! Questions asked at the terminal (`supply`): a field typed by a person, echoed or not.
//!
//! Invariant: the terminal's settings are put back as they were when a question ends, whether
//! it ends by Enter, Ctrl-C, Ctrl-D or an error. While a question is open the terminal does not
//! turn Ctrl-C into SIGINT (`ISIG` off); Ctrl-C ends the line instead (it is the line's extra
//! end-of-line character, `VEOL`), and the answer is [`PromptError::Interrupted`]. So no signal
//! can kill the process while echo is off, and nothing needs a signal handler.
//!
//! The API: [`line`] for a value that may be seen (it echoes and offers a default), [`secret`]
//! for one that may not (no echo, held in a `SecretString`). Both read standard input, which
//! must be a terminal, and write the question to standard error.

use std::io::{Read, Write};

use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};
use secrecy::SecretString;

/// Ctrl-C, as the terminal sends it.
const INTERRUPT: u8 = 0x03;

/// Why a question got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("interrupted (Ctrl-C)")]
    Interrupted,
    #[error("the input ended (Ctrl-D) before an answer")]
    EndOfInput,
    #[error("the terminal could not be read or set: {0}")]
    Terminal(String),
}

/// Asks for a value that may be seen: the typed text echoes, and Enter on an empty line keeps
/// `default` (shown in brackets). Surrounding white space is trimmed.
pub fn line(label: &str, default: Option<&str>) -> Result<String, PromptError> {
    let question = match default {
        Some(d) => format!("{label} [{d}]: "),
        None => format!("{label}: "),
    };
    let answer = ask(&question, true)?;
    Ok(with_default(&answer, default))
}

/// Asks for a value that may not be seen: nothing typed echoes. An empty answer is returned as
/// empty; what it means is the caller's business.
pub fn secret(label: &str) -> Result<SecretString, PromptError> {
    let answer = ask(&format!("{label}: "), false)?;
    // The Enter the person typed did not echo: end the line ourselves.
    let _ = std::io::stderr().write_all(b"\n");
    Ok(SecretString::from(answer.trim().to_string()))
}

/// The answer to a question that echoes: the typed text, or the default for an empty line.
fn with_default(typed: &str, default: Option<&str>) -> String {
    match (typed.trim(), default) {
        ("", Some(d)) => d.to_string(),
        (t, _) => t.to_string(),
    }
}

/// What one read line means: the bytes up to the end of line, or why there is none. `bytes` is
/// everything read so far; `None` means "read more".
fn parse(bytes: &[u8], at_eof: bool) -> Option<Result<String, PromptError>> {
    if let Some(end) = bytes.iter().position(|b| *b == b'\n' || *b == INTERRUPT) {
        if bytes[end] == INTERRUPT {
            return Some(Err(PromptError::Interrupted));
        }
        return Some(Ok(String::from_utf8_lossy(&bytes[..end]).into_owned()));
    }
    if at_eof {
        return Some(if bytes.is_empty() {
            Err(PromptError::EndOfInput)
        } else {
            Ok(String::from_utf8_lossy(bytes).into_owned())
        });
    }
    None
}

/// Puts the terminal back as it was when dropped.
struct Restore {
    saved: Termios,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

fn ask(question: &str, echo: bool) -> Result<String, PromptError> {
    let terminal = |e: nix::Error| PromptError::Terminal(e.desc().to_string());
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(&stdin).map_err(terminal)?;
    let mut open = saved.clone();
    open.local_flags.set(LocalFlags::ECHO, echo);
    open.local_flags.remove(LocalFlags::ISIG);
    open.local_flags.insert(LocalFlags::ICANON);
    open.control_chars[SpecialCharacterIndices::VEOL as usize] = INTERRUPT;
    let mut err = std::io::stderr();
    let _ = err.write_all(question.as_bytes());
    let _ = err.flush();
    // From here on the guard restores the terminal on every way out.
    let _restore = Restore { saved };
    termios::tcsetattr(&stdin, SetArg::TCSANOW, &open).map_err(terminal)?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 1024];
    let mut input = stdin.lock();
    loop {
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PromptError::Terminal(e.to_string())),
        };
        bytes.extend_from_slice(&buf[..n]);
        if let Some(answer) = parse(&bytes, n == 0) {
            if answer.is_err() {
                let _ = err.write_all(b"\n");
            }
            return answer;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What was read, whether the input ended, and the answer (`None`: read more).
    type Case = (
        &'static [u8],
        bool,
        Option<Result<&'static str, &'static str>>,
    );

    #[test]
    fn a_line_is_what_was_typed_up_to_enter_or_why_there_is_none() {
        let cases: &[Case] = &[
            (b"export-bot\n", false, Some(Ok("export-bot"))),
            (b"\n", false, Some(Ok(""))),
            (b"tok", false, None),
            (b"tok", true, Some(Ok("tok"))),
            (b"", true, Some(Err("EndOfInput"))),
            (b"half\x03", false, Some(Err("Interrupted"))),
            (b"\x03", false, Some(Err("Interrupted"))),
        ];
        for (bytes, eof, want) in cases {
            let got = parse(bytes, *eof).map(|r| r.map_err(|e| format!("{e:?}")));
            let want = want.map(|r| r.map(str::to_string).map_err(str::to_string));
            assert_eq!(got, want, "{:?} eof={eof}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn enter_on_an_empty_line_keeps_the_default() {
        let cases = [
            ("", Some("export-bot"), "export-bot"),
            ("  ", Some("export-bot"), "export-bot"),
            ("other", Some("export-bot"), "other"),
            (" other ", None, "other"),
            ("", None, ""),
        ];
        for (typed, default, want) in cases {
            assert_eq!(with_default(typed, default), want, "{typed:?} {default:?}");
        }
    }
}
