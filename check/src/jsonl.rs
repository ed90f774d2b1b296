//! Histories as JSON lines: one operation or event per line.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A history that could not be read or written as JSON lines.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    /// A line is not a valid record.
    #[error("line {line}: {source}")]
    Line {
        /// The line's number, counting from 1.
        line: usize,
        /// What was wrong with it.
        source: serde_json::Error,
    },
    /// A record could not be encoded.
    #[error("record {index}: {source}")]
    Encode {
        /// The record's position, counting from 0.
        index: usize,
        /// What was wrong with it.
        source: serde_json::Error,
    },
}

/// Reads one record per non-blank line.
pub fn read_jsonl<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, JsonlError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|source| JsonlError::Line { line: n + 1, source })
        })
        .collect()
}

/// Writes one record per line, each line ending in `\n`.
pub fn to_jsonl<T: Serialize>(records: &[T]) -> Result<String, JsonlError> {
    let mut out = String::new();
    for (index, record) in records.iter().enumerate() {
        let line = serde_json::to_string(record).map_err(|source| JsonlError::Encode { index, source })?;
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}
