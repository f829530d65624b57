//! Automatic scores of generated responses against reference outputs, for
//! every reader (no judge model, no network): exact match and ROUGE-L.
//!
//! Both compare *words*: the text is lowercased, everything but letters and
//! digits becomes a space, and the rest is split on white space — the
//! tokenization of Google's `rouge_score` package (without stemming).
//! ROUGE-L is the longest common subsequence of the two word lists: its
//! precision is that length over the response's words, its recall over the
//! reference's, and the score the F1 of the two.
//!
//! ```
//! use llm_core::eval::metrics::{exact_match, rouge_l};
//!
//! let reference = "The correct spelling is 'Occasion.'";
//! assert!(exact_match("the correct spelling is occasion", reference));
//! let r = rouge_l("The spelling is 'Occasion'.", reference);
//! assert_eq!((r.precision, r.recall), (1.0, 0.8));   // 4 common words of 4 and of 5
//! assert!((r.f1 - 8.0 / 9.0).abs() < 1e-12);
//! ```

use std::fmt;

use crate::finetune::instruct::InstructionEntry;

/// The words of a text as ROUGE compares them: lowercase letters and digits.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// True when the response has the reference's words, in order (case and
/// punctuation aside).
pub fn exact_match(response: &str, reference: &str) -> bool {
    words(response) == words(reference)
}

/// Length of the longest common subsequence of two word lists.
pub fn lcs_length<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L of one response against one reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeL {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// ROUGE-L (see the module docs); all zero when either text has no words.
pub fn rouge_l(response: &str, reference: &str) -> RougeL {
    let (r, t) = (words(response), words(reference));
    if r.is_empty() || t.is_empty() {
        return RougeL {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
        };
    }
    let lcs = lcs_length(&r, &t) as f64;
    let precision = lcs / r.len() as f64;
    let recall = lcs / t.len() as f64;
    let f1 = if lcs == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    RougeL {
        precision,
        recall,
        f1,
    }
}

/// Exact match and ROUGE-L over a test set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResponseScores {
    /// Entries scored.
    pub n: usize,
    /// Share of responses equal to the reference (0–1).
    pub exact_match: f64,
    /// Mean ROUGE-L F1 (0–1).
    pub rouge_l_f1: f64,
}

impl ResponseScores {
    /// Score `responses[i]` against `references[i]`.
    pub fn new<A: AsRef<str>, B: AsRef<str>>(responses: &[A], references: &[B]) -> Self {
        let n = responses.len().min(references.len());
        if n == 0 {
            return ResponseScores {
                n,
                exact_match: 0.0,
                rouge_l_f1: 0.0,
            };
        }
        let pairs = responses.iter().zip(references);
        let matches = pairs
            .clone()
            .filter(|(a, b)| exact_match(a.as_ref(), b.as_ref()))
            .count();
        let f1: f64 = pairs.map(|(a, b)| rouge_l(a.as_ref(), b.as_ref()).f1).sum();
        ResponseScores {
            n,
            exact_match: matches as f64 / n as f64,
            rouge_l_f1: f1 / n as f64,
        }
    }

    /// Score each entry's `model_response` against its `output`; `None` when
    /// an entry has no response.
    pub fn of_entries(entries: &[InstructionEntry]) -> Option<Self> {
        let responses: Option<Vec<&str>> = entries
            .iter()
            .map(|e| e.model_response.as_deref())
            .collect();
        let references: Vec<&str> = entries.iter().map(|e| e.output.as_str()).collect();
        Some(ResponseScores::new(&responses?, &references))
    }
}

impl fmt::Display for ResponseScores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} responses: exact match {:.1} %, ROUGE-L F1 {:.3}",
            self.n,
            100.0 * self.exact_match,
            self.rouge_l_f1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_drop_case_and_punctuation() {
        let _rng = crate::rng_lock();
        assert_eq!(
            words("Hello, World! It's 9:30."),
            ["hello", "world", "it", "s", "9", "30"]
        );
        assert!(words(" ... ").is_empty());
    }

    #[test]
    fn lcs_and_rouge() {
        let _rng = crate::rng_lock();
        assert_eq!(lcs_length(&[1, 2, 3, 4], &[2, 4, 3]), 2);
        assert_eq!(lcs_length::<u8>(&[], &[1]), 0);
        let same = rouge_l("a b c", "A, b. C!");
        assert_eq!((same.precision, same.recall, same.f1), (1.0, 1.0, 1.0));
        let none = rouge_l("x y", "a b");
        assert_eq!(none.f1, 0.0);
        assert_eq!(rouge_l("", "a").f1, 0.0);
        // "police killed the gunman" vs "police kill the gunman": LCS 3 of 4 and 4
        let r = rouge_l("police kill the gunman", "police killed the gunman");
        assert_eq!((r.precision, r.recall), (0.75, 0.75));
    }

    #[test]
    fn scores_over_entries() {
        let _rng = crate::rng_lock();
        let mut a = InstructionEntry::new("i", "", "The sky is blue.");
        a.model_response = Some("the sky is blue".into());
        let mut b = InstructionEntry::new("i", "", "Seven");
        b.model_response = Some("Eight".into());
        let s = ResponseScores::of_entries(&[a.clone(), b]).unwrap();
        assert_eq!(s.n, 2);
        assert_eq!(s.exact_match, 0.5);
        assert_eq!(s.rouge_l_f1, 0.5);
        assert_eq!(
            s.to_string(),
            "2 responses: exact match 50.0 %, ROUGE-L F1 0.500"
        );
        a.model_response = None;
        assert!(ResponseScores::of_entries(&[a]).is_none());
    }
}
