//! The Korean data shipped inside the worker binary (`worker/data/ko/`, provenance and licences
//! in its NOTICE.md): raw prose for continued pretraining, tax-ruling question/answer pairs and
//! hanja→reading pairs.
//!
//! The files are embedded with `include_str!`, so a worker needs no data directory. They are part
//! of the build, so a parse failure is a bug in the build, not in a user's input: these functions
//! panic rather than return errors.

use serde::Deserialize;

use super::jsonl::{parse_jsonl, Record};

const CORPUS: &str = include_str!("../../data/ko/corpus.jsonl");
const QA_TAX_RULINGS: &str = include_str!("../../data/ko/qa_tax_rulings.jsonl");
const HANJA_PAIRS: &str = include_str!("../../data/ko/hanja_pairs.jsonl");

/// The `text` of every paragraph of `corpus.jsonl` (489 paragraphs, about 620 K characters: the
/// Constitution, National Assembly bills, tax-ruling summaries and VS Code UI strings).
pub fn korean_corpus() -> Vec<String> {
    parse_jsonl("corpus.jsonl", CORPUS)
        .expect("shipped data should parse")
        .into_iter()
        .map(|record| match record {
            Record::Text(text) => text,
            other => panic!("corpus.jsonl holds a non-text record: {other:?}"),
        })
        .collect()
}

/// (instruction, output) of every pair in `qa_tax_rulings.jsonl` (1,175 National Tax Service and
/// tax tribunal rulings).
pub fn qa_pairs() -> Vec<(String, String)> {
    parse_jsonl("qa_tax_rulings.jsonl", QA_TAX_RULINGS)
        .expect("shipped data should parse")
        .into_iter()
        .map(|record| match record {
            Record::Instruction { instruction, input: None, output } => (instruction, output),
            other => panic!("qa_tax_rulings.jsonl holds a record other than instruction/output: {other:?}"),
        })
        .collect()
}

/// One line of `hanja_pairs.jsonl`; `type` is not needed.
#[derive(Deserialize)]
struct HanjaRow {
    hanja: String,
    reading: String,
    /// A character's meaning and sound ("집 가"); words have none.
    #[serde(default)]
    hun_eum: Option<String>,
}

/// Every line of `hanja_pairs.jsonl`, in file order.
fn hanja_rows() -> impl Iterator<Item = HanjaRow> {
    HANJA_PAIRS.lines().filter(|line| !line.trim().is_empty()).map(|line| serde_json::from_str(line).expect("shipped data should parse"))
}

/// (hanja, Hangul reading) of every line of `hanja_pairs.jsonl`: 6,304 characters (家 → 가) then
/// 30,000 words (紫外線燈 → 자외선등), in file order.
pub fn hanja_pairs() -> Vec<(String, String)> {
    hanja_rows().map(|row| (row.hanja, row.reading)).collect()
}

/// Hanja readings per pretraining document: one line each, so a document is a few hundred tokens.
const READINGS_PER_DOCUMENT: usize = 64;

/// Every Korean text shipped, as documents for a base's tokenizer and pretraining (what `worker
/// base` trains the built-in base on by default): the corpus's paragraphs, each ruling as its
/// question and answer, and the Hangul side of the hanja pairs (a character's meaning and sound,
/// "여덟 팔", or a word's reading, "자외선등"), 64 to a document. The corpus alone is laws and rulings that write
/// numbers in digits, so a base on it alone barely sees syllables like 삼, 칠 or 여덟, and its
/// tokenizer splits them into bytes.
pub fn pretraining_texts() -> Vec<String> {
    let mut texts = korean_corpus();
    texts.extend(qa_pairs().into_iter().map(|(question, answer)| format!("{question}\n{answer}")));
    let readings: Vec<String> = hanja_rows().map(|row| row.hun_eum.unwrap_or(row.reading)).collect();
    texts.extend(readings.chunks(READINGS_PER_DOCUMENT).map(|lines| lines.join("\n")));
    texts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_files_parse_with_their_record_counts() {
        let corpus = korean_corpus();
        assert_eq!(corpus.len(), 489);
        assert!(corpus[0].starts_with("대한민국헌법"));
        assert!(corpus.iter().all(|t| !t.trim().is_empty()));

        let qa = qa_pairs();
        assert_eq!(qa.len(), 1_175);
        assert_eq!(qa[0].0, "간주임대료 계산");

        let hanja = hanja_pairs();
        assert_eq!(hanja.len(), 36_304);
        assert_eq!(hanja[1], ("家".to_owned(), "가".to_owned()));
        assert!(hanja.iter().all(|(h, r)| !h.is_empty() && !r.is_empty()));
    }

    #[test]
    fn pretraining_texts_hold_every_shipped_korean_text() {
        let texts = pretraining_texts();
        assert_eq!(texts.len(), 489 + 1_175 + 36_304_usize.div_ceil(READINGS_PER_DOCUMENT));
        assert!(texts[489].starts_with("간주임대료 계산\n특수관계있는"));
        // A character's line is its meaning and sound, a word's line its reading.
        assert!(texts[489 + 1_175].starts_with("옳을 가\n집 가\n"));
        assert!(texts.iter().any(|t| t.lines().any(|line| line == "여덟 팔")));
        assert!(texts.last().expect("documents").lines().all(|line| line.chars().all(|c| !('\u{4E00}'..='\u{9FFF}').contains(&c))));
    }
}
