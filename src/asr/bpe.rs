//! Text → Whisper tokens (for initial prompts and hotwords): GPT-2 pre-tokenisation and
//! tiktoken's byte-pair merge. Whisper's vocabularies are tiktoken files, so a token's id is
//! also its merge rank.

use std::collections::HashMap;

use super::tokenizer::Tokenizer;

#[derive(Debug, Clone)]
pub struct BpeEncoder {
    ranks: HashMap<Vec<u8>, u32>,
}

impl BpeEncoder {
    /// Ranks from the text tokens (ids below end-of-text) of a model's vocabulary.
    pub fn new(tokenizer: &Tokenizer) -> Self {
        let ranks = (0..tokenizer.special.eot)
            .filter_map(|id| {
                let bytes = tokenizer.token_bytes(id);
                let rank = u32::try_from(id).ok()?;
                (!bytes.is_empty()).then(|| (bytes.to_vec(), rank))
            })
            .collect();
        Self { ranks }
    }

    pub fn from_ranks(ranks: impl IntoIterator<Item = (Vec<u8>, u32)>) -> Self {
        Self {
            ranks: ranks.into_iter().collect(),
        }
    }

    pub fn encode(&self, text: &str) -> Vec<i64> {
        let mut out = Vec::new();
        let mut bounds = Vec::new();
        for piece in pre_tokenize(text) {
            self.encode_piece(piece.as_bytes(), &mut bounds, &mut out);
        }
        out
    }

    /// tiktoken's merge: repeatedly join the adjacent pair whose concatenation has the lowest
    /// rank. Pieces are words, so the quadratic scan is cheap.
    fn encode_piece(&self, piece: &[u8], bounds: &mut Vec<usize>, out: &mut Vec<i64>) {
        if let Some(&rank) = self.ranks.get(piece) {
            out.push(i64::from(rank));
            return;
        }
        bounds.clear();
        bounds.extend(0..=piece.len());
        loop {
            let mut best: Option<(u32, usize)> = None;
            for i in 0..bounds.len().saturating_sub(2) {
                if let Some(&rank) = self.ranks.get(&piece[bounds[i]..bounds[i + 2]])
                    && best.is_none_or(|(r, _)| rank < r)
                {
                    best = Some((rank, i));
                }
            }
            match best {
                Some((_, i)) => {
                    bounds.remove(i + 1);
                }
                None => break,
            }
        }
        // Byte-level vocabularies hold every single byte, so every part has a rank.
        out.extend(
            bounds
                .windows(2)
                .filter_map(|w| self.ranks.get(&piece[w[0]..w[1]]))
                .map(|&rank| i64::from(rank)),
        );
    }
}

#[derive(PartialEq, Clone, Copy)]
enum Class {
    Letter,
    Number,
    Other,
}

// \p{N} is exactly `is_numeric`; `is_alphabetic` is \p{L} plus letter numbers (handled as
// numbers first) and some combining marks, which is the only difference from the regex.
fn class(c: char) -> Class {
    if c.is_numeric() {
        Class::Number
    } else if c.is_alphabetic() {
        Class::Letter
    } else {
        Class::Other
    }
}

/// Splits text like GPT-2's pattern
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
pub fn pre_tokenize(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let len = next_piece_len(rest).max(1);
        let len = (len..=rest.len())
            .find(|&l| rest.is_char_boundary(l))
            .unwrap_or(rest.len());
        pieces.push(&rest[..len]);
        rest = &rest[len..];
    }
    pieces
}

fn next_piece_len(s: &str) -> usize {
    for contraction in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"] {
        if s.starts_with(contraction) {
            return contraction.len();
        }
    }
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return 0;
    };
    // ` ?X+`: one leading space joins the run that follows it.
    let (start, c) = match (first, chars.next()) {
        (' ', Some(next)) if !next.is_whitespace() => (1, next),
        _ => (0, first),
    };
    if !c.is_whitespace() {
        let wanted = class(c);
        let run = s[start..]
            .char_indices()
            .find(|&(_, ch)| ch.is_whitespace() || class(ch) != wanted)
            .map_or(s.len() - start, |(i, _)| i);
        return start + run;
    }
    let run_end = s
        .char_indices()
        .find(|&(_, ch)| !ch.is_whitespace())
        .map_or(s.len(), |(i, _)| i);
    if run_end == s.len() {
        return run_end;
    }
    // `\s+(?!\S)` leaves the last whitespace before a word to that word; a lone whitespace
    // character before a word is `\s+` by itself.
    let last = s[..run_end].char_indices().last().map_or(0, |(i, _)| i);
    if last > 0 { last } else { run_end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_the_gpt2_pattern() {
        assert_eq!(
            pre_tokenize("Hello world, it's 2024!!  Bye\n\nnow  "),
            vec![
                "Hello", " world", ",", " it", "'s", " 2024", "!!", " ", " Bye", "\n", "\n", "now",
                "  "
            ]
        );
        assert_eq!(
            pre_tokenize(" héllo wörld\tx"),
            vec![" héllo", " wörld", "\t", "x"]
        );
        assert_eq!(pre_tokenize("a \nb"), vec!["a", " ", "\n", "b"]);
        assert_eq!(pre_tokenize("\"'sup"), vec!["\"'", "sup"]);
        assert_eq!(pre_tokenize("日本語です。"), vec!["日本語です", "。"]);
        assert!(pre_tokenize("").is_empty());
    }

    #[test]
    fn merges_lowest_rank_pairs_first() {
        let mut ranks: Vec<(Vec<u8>, u32)> = (0u8..=255).map(|b| (vec![b], u32::from(b))).collect();
        ranks.push((b"lo".to_vec(), 256));
        ranks.push((b"ll".to_vec(), 257));
        ranks.push((b"llo".to_vec(), 258));
        ranks.push((b" he".to_vec(), 300));
        ranks.push((b"he".to_vec(), 259));
        let bpe = BpeEncoder::from_ranks(ranks);
        // "hello": lo (256) merges before ll (257), then l+lo (258), then he (259).
        assert_eq!(bpe.encode("hello"), vec![259, 258]);
        assert_eq!(bpe.encode("hell"), vec![259, 257]);
        assert_eq!(bpe.encode(" he"), vec![300]);
        assert_eq!(bpe.encode("ll"), vec![257]);
    }
}
