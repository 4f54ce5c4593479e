//! Tokenizers through the `tokenizers` crate: loading a model folder's `tokenizer.json`, training
//! the built-in byte-level BPE on Korean text, and the chat template with its loss mask.
//!
//! The chat template is ChatML, as Qwen2 uses it:
//! `<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>`.

use std::path::Path;
use std::str::FromStr;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::Split;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, SplitDelimiterBehavior, Tokenizer, TokenizerBuilder};

use crate::data::jsonl::{Message, Role};

/// End of a document; also the padding token.
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// Opens a chat turn.
pub const IM_START: &str = "<|im_start|>";
/// Closes a chat turn; generation stops here.
pub const IM_END: &str = "<|im_end|>";

/// Why a tokenizer could not be loaded, trained or saved.
#[derive(Debug, thiserror::Error)]
#[error("tokenizer: {0}")]
pub struct TokenizerError(String);

/// A tokenizer with the special tokens the chat template needs.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// `<|endoftext|>`.
    pub end_of_text: u32,
    /// `<|im_start|>`.
    pub im_start: u32,
    /// `<|im_end|>`.
    pub im_end: u32,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("vocab_size", &self.vocab_size()).finish()
    }
}

impl TextTokenizer {
    fn wrap(inner: Tokenizer) -> Result<Self, TokenizerError> {
        let id = |token: &str| inner.token_to_id(token).ok_or_else(|| TokenizerError(format!("the vocabulary has no {token} token")));
        Ok(TextTokenizer { end_of_text: id(END_OF_TEXT)?, im_start: id(IM_START)?, im_end: id(IM_END)?, inner })
    }

    /// Loads a `tokenizer.json`; it must have the three ChatML special tokens.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let inner = Tokenizer::from_file(path).map_err(|e| TokenizerError(format!("{}: {e}", path.display())))?;
        Self::wrap(inner)
    }

    /// Writes `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        self.inner.save(path, false).map_err(|e| TokenizerError(format!("{}: {e}", path.display())))
    }

    /// Trains a byte-level BPE of `vocab_size` tokens on `texts`. Digits are split one by one
    /// (as Qwen2 does) so number tasks see every digit, and spaces are tokens of their own.
    pub fn train(texts: &[String], vocab_size: usize) -> Result<Self, TokenizerError> {
        let mut trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(2)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true), AddedToken::from(IM_START, true), AddedToken::from(IM_END, true)])
            .build();
        // A space is a token of its own rather than the start of the next word's token, so a word
        // is the same tokens after a digit or at a line's start as after a space, and an answer
        // can copy a word of its prompt token for token ("40개" → "마흔 개").
        let spaces = Split::new(" ", SplitDelimiterBehavior::Isolated, false).map_err(|e| TokenizerError(e.to_string()))?;
        let pre = Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::Split(spaces),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ]);
        let mut tokenizer = TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
            .with_model(BPE::default())
            .with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(pre)))
            .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())))
            .build()
            .map_err(|e| TokenizerError(e.to_string()))?;
        tokenizer.train(&mut trainer, texts.iter()).map_err(|e| TokenizerError(e.to_string()))?;
        let json = tokenizer.to_string(false).map_err(|e| TokenizerError(e.to_string()))?;
        Self::wrap(Tokenizer::from_str(&json).map_err(|e| TokenizerError(e.to_string()))?)
    }

    /// Tokens in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text` (special tokens in the text are recognised; none are added).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.inner.encode(text, false).map(|e| e.get_ids().to_vec()).unwrap_or_default()
    }

    /// Text of `ids`, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default()
    }

    /// The chat-template text of `messages` up to the assistant's turn, ready for generation.
    pub fn chat_prompt(messages: &[Message]) -> String {
        let mut text = String::new();
        for m in messages {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            text.push_str(&format!("{IM_START}{role}\n{}{IM_END}\n", m.content));
        }
        text.push_str(&format!("{IM_START}assistant\n"));
        text
    }

    /// Token ids of a single-turn exchange and the loss mask (1 on the answer and its `<|im_end|>`).
    pub fn encode_exchange(&self, prompt: &str, answer: &str) -> (Vec<u32>, Vec<f32>) {
        let user = [Message { role: Role::User, content: prompt.to_owned() }];
        self.encode_turns(&Self::chat_prompt(&user), answer)
    }

    /// `context` (already in the template) followed by an answer turn: ids and loss mask.
    pub fn encode_turns(&self, context: &str, answer: &str) -> (Vec<u32>, Vec<f32>) {
        let mut ids = self.encode(context);
        let mut mask = vec![0.0; ids.len()];
        let answer_ids = self.encode(&format!("{answer}{IM_END}"));
        mask.extend(std::iter::repeat_n(1.0, answer_ids.len()));
        ids.extend(answer_ids);
        (ids, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trained_tokenizer_gives_a_word_the_same_tokens_after_a_space_and_after_a_digit() {
        let texts: Vec<String> = ["사과 40개와 배 12개", "마흔 개를 샀다", "개 두 마리", "책 3권과 마흔 권"].iter().cycle().take(40).map(|s| s.to_string()).collect();
        let tokenizer = TextTokenizer::train(&texts, 300).unwrap();
        let space = tokenizer.encode(" ");
        assert_eq!(space.len(), 1, "a space is one token");
        let counter = tokenizer.encode("개");
        let prompt = tokenizer.encode("40개");
        let answer = tokenizer.encode("마흔 개");
        assert!(prompt.ends_with(&counter), "{prompt:?} ends with {counter:?}");
        assert!(answer.ends_with(&[space.as_slice(), counter.as_slice()].concat()), "{answer:?} ends with a space and {counter:?}");
        // Digits stay one token each, and decoding gives the text back, spaces included.
        assert_eq!(prompt.len(), 2 + counter.len());
        assert_eq!(tokenizer.decode(&tokenizer.encode("마흔 개를  샀다")), "마흔 개를  샀다");
    }
}
