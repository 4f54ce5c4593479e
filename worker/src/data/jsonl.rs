//! Users' own training data as JSONL, one record per line, in one of three shapes:
//!
//! * `{"text": ...}`: raw text, for continued pretraining;
//! * `{"instruction": ..., "input": ... (optional), "output": ...}`: an instruction pair;
//! * `{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}`: a chat.
//!
//! This module owns reading and validating those files; it knows nothing of tokenizers or
//! prompt templates. A malformed line is never dropped silently: every bad line is collected and
//! the whole file is rejected with their line numbers and reasons, because training on the
//! silently shrunken rest of a file is a worse outcome than an error. Blank lines are skipped
//! (they hold no data) and extra fields (`source`, `license`, ...) are allowed.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// At most this many bad lines are spelled out in [`DataError::Malformed`]'s message.
const MAX_LISTED: usize = 10;

/// One training record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Raw text (`{"text": ...}`).
    Text(String),
    /// An instruction, its optional input and the expected output.
    Instruction {
        /// What to do.
        instruction: String,
        /// What to do it to; `None` when absent, null or blank (Alpaca files write `""`).
        input: Option<String>,
        /// The answer to train on.
        output: String,
    },
    /// A chat that ends with the assistant message to train on and has at least one user message.
    Chat(Vec<Message>),
}

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the whole chat.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// `system`, `user` or `assistant`, as the files write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Role::System, Role::User, Role::Assistant].into_iter().find(|r| r.as_str() == s)
    }
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// A line that is not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number in the file.
    pub line: usize,
    /// Why the line is not a record, e.g. "`messages[1].role` must be system, user or assistant".
    pub reason: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Why a JSONL file could not be read as training data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read at all.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file has no records (it is empty or all blank lines).
    #[error("{name}: no records (the file is empty or has only blank lines)")]
    Empty {
        /// The file (or other source) name.
        name: String,
    },
    /// Some lines are not records; the file is rejected as a whole.
    #[error("{name}: {}", describe(.lines))]
    Malformed {
        /// The file (or other source) name.
        name: String,
        /// Every bad line, in file order.
        lines: Vec<BadLine>,
    },
}

fn describe(lines: &[BadLine]) -> String {
    let n = lines.len();
    let listed: Vec<String> = lines.iter().take(MAX_LISTED).map(BadLine::to_string).collect();
    let mut s = format!("{n} malformed line{}: {}", if n == 1 { "" } else { "s" }, listed.join("; "));
    if n > MAX_LISTED {
        s.push_str(&format!("; ... and {} more", n - MAX_LISTED));
    }
    s
}

/// Parses JSONL `text`; `source_name` (usually the file name) prefixes error messages.
pub fn parse_jsonl(source_name: &str, text: &str) -> Result<Vec<Record>, DataError> {
    parse_bytes(source_name, text.as_bytes())
}

/// Reads and parses the JSONL file at `path`. Lines that are not UTF-8 are reported like any
/// other malformed line, not replaced.
pub fn read_jsonl(path: &Path) -> Result<Vec<Record>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read { path: path.to_owned(), source })?;
    parse_bytes(&path.display().to_string(), &bytes)
}

fn parse_bytes(name: &str, bytes: &[u8]) -> Result<Vec<Record>, DataError> {
    // Editors on Windows may start the file with a byte-order mark.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut records = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let result = match std::str::from_utf8(raw) {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => parse_line(line),
            Err(e) => Err(format!("not UTF-8 (invalid byte at column {})", e.valid_up_to() + 1)),
        };
        match result {
            Ok(record) => records.push(record),
            Err(reason) => bad.push(BadLine { line: i + 1, reason }),
        }
    }
    if !bad.is_empty() {
        return Err(DataError::Malformed { name: name.to_owned(), lines: bad });
    }
    if records.is_empty() {
        return Err(DataError::Empty { name: name.to_owned() });
    }
    Ok(records)
}

/// One non-blank line. The first shape whose key is present decides: `messages`, then
/// `instruction`/`output`, then `text`; any other key is an extra field. (Some instruction
/// datasets also carry a preformatted `text` copy, which must not turn them into raw text.)
fn parse_line(line: &str) -> Result<Record, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({})", json_reason(&e)))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".to_owned());
    };
    if let Some(messages) = obj.get("messages") {
        return parse_chat(messages);
    }
    if obj.contains_key("instruction") || obj.contains_key("output") {
        let instruction = required_text(&obj, "instruction")?;
        let output = required_text(&obj, "output")?;
        let input = match obj.get("input") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("`input` must be a string".to_owned()),
        };
        return Ok(Record::Instruction { instruction, input, output });
    }
    if obj.contains_key("text") {
        return required_text(&obj, "text").map(Record::Text);
    }
    Err("no `text`, `instruction`/`output` or `messages` field".to_owned())
}

/// serde_json's message with "at line 1 column N" shortened to "at column N": the line number
/// is already the file's.
fn json_reason(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(at) => format!("{} at column {}", &message[..at], e.column()),
        None => message,
    }
}

/// A string field that must be present and not blank.
fn required_text(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        None => Err(format!("`{key}` is missing")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(format!("`{key}` is empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn parse_chat(messages: &Value) -> Result<Record, String> {
    let Value::Array(items) = messages else {
        return Err("`messages` must be an array".to_owned());
    };
    if items.is_empty() {
        return Err("`messages` is empty".to_owned());
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(obj) = item else {
            return Err(format!("`messages[{i}]` must be an object"));
        };
        let role = obj
            .get("role")
            .and_then(Value::as_str)
            .and_then(Role::parse)
            .ok_or_else(|| format!("`messages[{i}].role` must be system, user or assistant"))?;
        let content = match obj.get("content") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(format!("`messages[{i}].content` must be a string")),
        };
        out.push(Message { role, content });
    }
    let last = out.len() - 1;
    if out[last].role != Role::Assistant {
        return Err("a chat must end with an assistant message".to_owned());
    }
    // The final assistant message is what the model is trained to say.
    if out[last].content.trim().is_empty() {
        return Err(format!("`messages[{last}].content` (the final assistant message) is empty"));
    }
    if !out.iter().any(|m| m.role == Role::User) {
        return Err("a chat needs at least one user message".to_owned());
    }
    Ok(Record::Chat(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_lines(text: &str) -> Vec<BadLine> {
        match parse_jsonl("data.jsonl", text) {
            Err(DataError::Malformed { lines, .. }) => lines,
            other => panic!("expected malformed lines, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_three_shapes_and_skips_blank_lines() {
        let text = concat!(
            "{\"text\": \"대한민국은 민주공화국이다.\", \"source\": \"x\", \"license\": \"y\"}\n",
            "\n   \r\n",
            "{\"instruction\": \"번역하세요\", \"input\": \"cat\", \"output\": \"고양이\"}\r\n",
            "{\"instruction\": \"인사하세요\", \"input\": \"\", \"output\": \"안녕하세요\"}\n",
            "{\"messages\": [{\"role\": \"system\", \"content\": \"\"}, {\"role\": \"user\", \"content\": \"안녕\"}, ",
            "{\"role\": \"assistant\", \"content\": \"안녕하세요\"}]}\n",
        );
        let records = parse_jsonl("data.jsonl", text).expect("valid");
        assert_eq!(
            records,
            vec![
                Record::Text("대한민국은 민주공화국이다.".to_owned()),
                Record::Instruction {
                    instruction: "번역하세요".to_owned(),
                    input: Some("cat".to_owned()),
                    output: "고양이".to_owned()
                },
                Record::Instruction {
                    instruction: "인사하세요".to_owned(),
                    input: None,
                    output: "안녕하세요".to_owned()
                },
                Record::Chat(vec![
                    Message { role: Role::System, content: String::new() },
                    Message { role: Role::User, content: "안녕".to_owned() },
                    Message { role: Role::Assistant, content: "안녕하세요".to_owned() },
                ]),
            ]
        );
        // A byte-order mark and no trailing newline are fine.
        assert_eq!(parse_jsonl("a", "\u{feff}{\"text\": \"가\"}").expect("valid"), vec![Record::Text("가".to_owned())]);
        // A preformatted `text` beside an instruction pair is an extra field.
        let both = "{\"instruction\": \"a\", \"output\": \"b\", \"text\": \"a b\"}";
        assert!(matches!(parse_jsonl("a", both).expect("valid")[0], Record::Instruction { .. }));
    }

    #[test]
    fn every_bad_line_is_reported_with_its_reason() {
        let text = concat!(
            "{\"text\": \"좋음\"}\n",
            "oops\n",
            "{\"text\": \"좋음\"}\n",
            "[1, 2]\n",
            "{\"source\": \"x\"}\n",
            "{\"instruction\": \"a\"}\n",
            "{\"output\": \"b\"}\n",
            "{\"text\": 3}\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"bot\", \"content\": \"b\"}]}\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n",
            "{\"messages\": [{\"role\": \"system\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n",
            "{\"messages\": []}\n",
            "{\"text\": \"  \"}\n",
            "{\"text\": \"a\"} trailing\n",
        );
        let lines = bad_lines(text);
        let got: Vec<(usize, &str)> = lines.iter().map(|b| (b.line, b.reason.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (2, "not JSON (expected value at column 1)"),
                (4, "not a JSON object"),
                (5, "no `text`, `instruction`/`output` or `messages` field"),
                (6, "`output` is missing"),
                (7, "`instruction` is missing"),
                (8, "`text` must be a string"),
                (9, "`messages[1].role` must be system, user or assistant"),
                (10, "a chat must end with an assistant message"),
                (11, "a chat needs at least one user message"),
                (12, "`messages` is empty"),
                (13, "`text` is empty"),
                (14, "not JSON (trailing characters at column 15)"),
            ]
        );
        let message = parse_jsonl("data.jsonl", text).expect_err("malformed").to_string();
        assert!(
            message
                .starts_with("data.jsonl: 12 malformed lines: line 2: not JSON (expected value at column 1); line 4: "),
            "{message}"
        );
        assert!(message.ends_with("; ... and 2 more"), "{message}");
    }

    #[test]
    fn one_bad_line_reads_in_the_singular() {
        let message =
            parse_jsonl("d.jsonl", "{\"text\": \"a\"}\n{\"messages\": 1}\n").expect_err("malformed").to_string();
        assert_eq!(message, "d.jsonl: 1 malformed line: line 2: `messages` must be an array");
    }

    #[test]
    fn empty_files_are_errors() {
        for text in ["", "\n\n  \n"] {
            assert!(matches!(parse_jsonl("e.jsonl", text), Err(DataError::Empty { .. })), "{text:?}");
        }
        assert_eq!(
            parse_jsonl("e.jsonl", "").expect_err("empty").to_string(),
            "e.jsonl: no records (the file is empty or has only blank lines)"
        );
    }

    #[test]
    fn files_are_read_and_invalid_utf8_is_a_bad_line() {
        let dir = std::env::temp_dir().join(format!("worker-jsonl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("data.jsonl");
        std::fs::write(&path, b"{\"text\": \"ok\"}\n{\"text\": \"\xff\"}\n").expect("write");
        let err = read_jsonl(&path).expect_err("invalid UTF-8");
        assert!(
            err.to_string().ends_with("data.jsonl: 1 malformed line: line 2: not UTF-8 (invalid byte at column 11)"),
            "{err}"
        );
        std::fs::write(&path, "{\"text\": \"ok\"}\n").expect("write");
        assert_eq!(read_jsonl(&path).expect("valid"), vec![Record::Text("ok".to_owned())]);
        let missing = dir.join("missing.jsonl");
        assert!(matches!(read_jsonl(&missing), Err(DataError::Read { .. })));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
