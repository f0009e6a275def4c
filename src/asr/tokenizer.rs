//! Whisper token ids ↔ text: `tokens.txt` holds each token's bytes in base64 and its id; text
//! is the UTF-8 decoding of the concatenated bytes of the text tokens.

use std::collections::HashMap;

use base64::Engine;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokens file line {line}: {reason}")]
    Parse { line: usize, reason: String },
}

/// The special tokens a decoder needs, read from the model's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub sot: i64,
    pub eot: i64,
    pub transcribe: i64,
    pub translate: i64,
    pub sot_prev: i64,
    pub no_speech: i64,
    pub no_timestamps: i64,
    pub timestamp_begin: i64,
    /// Language code → token id, in the model's order (empty for English-only models).
    pub languages: Vec<(String, i64)>,
}

#[derive(Debug, Clone)]
pub struct Tokenizer {
    bytes: Vec<Vec<u8>>,
    by_bytes: HashMap<Vec<u8>, i64>,
    pub special: SpecialTokens,
}

impl Tokenizer {
    pub fn from_tokens_txt(text: &str, special: SpecialTokens) -> Result<Self, TokenizerError> {
        let mut bytes: Vec<Vec<u8>> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (encoded, id) = line.rsplit_once(' ').ok_or_else(|| TokenizerError::Parse {
                line: index + 1,
                reason: "expected `BASE64 ID`".to_owned(),
            })?;
            let id: usize = id.trim().parse().map_err(|_| TokenizerError::Parse {
                line: index + 1,
                reason: format!("bad id `{id}`"),
            })?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| TokenizerError::Parse {
                    line: index + 1,
                    reason: e.to_string(),
                })?;
            if bytes.len() <= id {
                bytes.resize(id + 1, Vec::new());
            }
            bytes[id] = decoded;
        }
        let by_bytes = bytes
            .iter()
            .enumerate()
            .filter(|(id, _)| (*id as i64) < special.eot)
            .map(|(id, b)| (b.clone(), id as i64))
            .collect();
        Ok(Self {
            bytes,
            by_bytes,
            special,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_text(&self, id: i64) -> bool {
        id >= 0 && id < self.special.eot
    }

    pub fn is_timestamp(&self, id: i64) -> bool {
        id >= self.special.timestamp_begin
    }

    /// Seconds of a timestamp token (0.02 s steps).
    pub fn timestamp_seconds(&self, id: i64) -> f64 {
        (id - self.special.timestamp_begin) as f64 * 0.02
    }

    /// Raw bytes of one text token.
    pub fn token_bytes(&self, id: i64) -> &[u8] {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.bytes.get(i))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Text of the text tokens among `ids`; special and timestamp tokens are skipped.
    pub fn decode(&self, ids: &[i64]) -> String {
        let mut out = Vec::new();
        for &id in ids {
            if self.is_text(id) {
                out.extend_from_slice(self.token_bytes(id));
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The id of a single token whose bytes are exactly `text`, if there is one.
    pub fn single_token(&self, text: &str) -> Option<i64> {
        self.by_bytes.get(text.as_bytes()).copied()
    }

    pub fn language_token(&self, code: &str) -> Option<i64> {
        self.special
            .languages
            .iter()
            .find(|(c, _)| c == code)
            .map(|(_, id)| *id)
    }

    pub fn language_code(&self, token: i64) -> Option<&str> {
        self.special
            .languages
            .iter()
            .find(|(_, id)| *id == token)
            .map(|(c, _)| c.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special() -> SpecialTokens {
        SpecialTokens {
            sot: 5,
            eot: 4,
            transcribe: 6,
            translate: 7,
            sot_prev: 8,
            no_speech: 9,
            no_timestamps: 10,
            timestamp_begin: 11,
            languages: vec![("en".into(), 12)],
        }
    }

    #[test]
    fn decodes_multibyte_text_split_across_tokens() {
        // "é" is two bytes split over tokens 2 and 3.
        let text = "SGk= 0\nIHRo 1\nww== 2\nqQ== 3\nPHxlbmR8Pg== 4\n";
        let tokenizer = Tokenizer::from_tokens_txt(text, special()).unwrap();
        assert_eq!(tokenizer.decode(&[0, 1, 2, 3, 4, 11]), "Hi thé");
        assert_eq!(tokenizer.single_token(" th"), Some(1));
        assert!(tokenizer.is_timestamp(13));
        assert!((tokenizer.timestamp_seconds(16) - 0.10).abs() < 1e-9);
        assert_eq!(tokenizer.language_token("en"), Some(12));
        assert!(Tokenizer::from_tokens_txt("garbage", special()).is_err());
    }
}
