//! Chapter 7.8: a larger LLM as judge, through a locally running
//! [Ollama](https://ollama.com) server.
//!
//! The book asks Llama 3 (8B) to score each fine-tuned response from 0 to
//! 100 against the reference output. [`OllamaJudge`] sends the book's prompt
//! to Ollama's `/api/chat` (by default on `http://127.0.0.1:11434`) with the
//! book's options (seed 123, temperature 0, a context of 2,048 tokens) and
//! reads the streamed answer. When no server answers, every call returns
//! [`JudgeError::Unreachable`], whose message says how to start one — a
//! notebook prints it and carries on with the offline metrics
//! ([`crate::eval::metrics`]).
//!
//! ```no_run
//! use llm_core::finetune::instruct::load_instruction_data;
//! use llm_core::eval::ollama::OllamaJudge;
//!
//! let judge = OllamaJudge::new("llama3");
//! let models = judge.check_if_running()?;           // the models the server has
//! println!("{}", judge.query_model("What do Llamas eat?")?);
//! let entries = load_instruction_data("instruction-data-with-response.json")?;
//! let report = judge.generate_model_scores(&entries, false)?;
//! println!("{report}");                             // how many could be scored, the average
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::{json, Value};

use crate::finetune::instruct::{format_input, InstructionEntry};

/// Where Ollama listens unless told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:11434";

/// Why the judge could not be asked, or its answer not read.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    /// Nothing answers at the URL (no server, wrong port, timeout).
    #[error("no Ollama server answers at {url} ({reason}). To score with an LLM judge: install Ollama from https://ollama.com, start it with `ollama serve`, then `ollama pull {model}`. The offline metrics need no server.")]
    Unreachable {
        url: String,
        model: String,
        reason: String,
    },
    /// The server answered with an HTTP error.
    #[error("{url} answered HTTP {status}: {message}{hint}")]
    Status {
        url: String,
        status: u16,
        message: String,
        hint: String,
    },
    /// The answer is not the JSON Ollama sends.
    #[error(
        "{url}: line {line} of the answer is not an Ollama chat message ({reason}): {excerpt:?}"
    )]
    Malformed {
        url: String,
        line: usize,
        reason: String,
        excerpt: String,
    },
    /// An entry to be judged has no `model_response` yet.
    #[error("entry {index} has no model_response: generate the responses first (instruct::generate_responses)")]
    NoResponse { index: usize },
}

/// A client for an Ollama server, with the options the book sends.
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaJudge {
    /// The server, e.g. `http://127.0.0.1:11434`.
    pub url: String,
    /// The judging model as Ollama names it (book: `llama3`).
    pub model: String,
    /// Sampling seed (book: 123).
    pub seed: i64,
    /// Sampling temperature (book: 0, deterministic).
    pub temperature: f64,
    /// Context window in tokens (book: 2048).
    pub num_ctx: i64,
    /// How long to wait for one answer (a large model on a CPU is slow).
    pub timeout: Duration,
}

impl OllamaJudge {
    /// A judge at [`DEFAULT_URL`] with the book's options.
    pub fn new(model: &str) -> Self {
        OllamaJudge {
            url: DEFAULT_URL.to_string(),
            model: model.to_string(),
            seed: 123,
            temperature: 0.0,
            num_ctx: 2048,
            timeout: Duration::from_secs(300),
        }
    }

    /// The same judge at another server URL.
    pub fn with_url(mut self, url: &str) -> Self {
        self.url = url.trim_end_matches('/').to_string();
        self
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(3)))
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            // a local server: never through a proxy from the environment
            .proxy(None)
            .build()
            .into()
    }

    fn unreachable(&self, url: &str, e: impl fmt::Display) -> JudgeError {
        JudgeError::Unreachable {
            url: url.to_string(),
            model: self.model.clone(),
            reason: e.to_string(),
        }
    }

    fn status_error(&self, url: &str, status: u16, body: &str) -> JudgeError {
        let message = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect());
        let hint = if status == 404 && message.contains("not found") {
            format!(" (run `ollama pull {}`)", self.model)
        } else {
            String::new()
        };
        JudgeError::Status {
            url: url.to_string(),
            status,
            message,
            hint,
        }
    }

    /// The book's `check_if_running`, asked of the server: the names of the
    /// models it has (`GET /api/tags`), or [`JudgeError::Unreachable`].
    pub fn check_if_running(&self) -> Result<Vec<String>, JudgeError> {
        let url = format!("{}/api/tags", self.url);
        let mut response = self
            .agent()
            .get(&url)
            .call()
            .map_err(|e| self.unreachable(&url, e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| self.unreachable(&url, e))?;
        if status != 200 {
            return Err(self.status_error(&url, status, &body));
        }
        let malformed = |reason: &str| JudgeError::Malformed {
            url: url.clone(),
            line: 1,
            reason: reason.to_string(),
            excerpt: body.chars().take(120).collect(),
        };
        let v: Value = serde_json::from_str(&body).map_err(|e| malformed(&e.to_string()))?;
        let models = v
            .get("models")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("no \"models\" list"))?;
        Ok(models
            .iter()
            .filter_map(|m| m.get("name").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    /// The book's `query_model`: send `prompt` as one user message to
    /// `/api/chat` and return the answer, joined from the streamed lines.
    pub fn query_model(&self, prompt: &str) -> Result<String, JudgeError> {
        let url = format!("{}/api/chat", self.url);
        let data = json!({
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "options": {"seed": self.seed, "temperature": self.temperature, "num_ctx": self.num_ctx},
        });
        let response = self
            .agent()
            .post(&url)
            .header("Content-Type", "application/json")
            .send(data.to_string())
            .map_err(|e| self.unreachable(&url, e))?;
        let status = response.status().as_u16();
        let mut reader = BufReader::new(response.into_body().into_reader());
        if status != 200 {
            let mut body = String::new();
            let _ = std::io::Read::read_to_string(&mut reader, &mut body);
            return Err(self.status_error(&url, status, &body));
        }
        let mut response_data = String::new();
        let mut line = String::new();
        let mut line_no = 0;
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .map_err(|e| self.unreachable(&url, e))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if line.trim().is_empty() {
                continue;
            }
            let malformed = |reason: String| JudgeError::Malformed {
                url: url.clone(),
                line: line_no,
                reason,
                excerpt: line.trim().chars().take(120).collect(),
            };
            let v: Value =
                serde_json::from_str(line.trim()).map_err(|e| malformed(e.to_string()))?;
            if let Some(err) = v.get("error").and_then(Value::as_str) {
                return Err(malformed(format!("the server reports: {err}")));
            }
            let content = v
                .get("message")
                .and_then(|m| m.get("content"))
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("no message.content".to_string()))?;
            response_data.push_str(content);
        }
        if line_no == 0 {
            return Err(JudgeError::Malformed {
                url,
                line: 0,
                reason: "the answer is empty".to_string(),
                excerpt: String::new(),
            });
        }
        Ok(response_data)
    }

    /// Ask for the score of `model_response` to `entry`: the book's prompt
    /// ([`judge_prompt`]) and the answer read as an integer from 0 to 100
    /// (`None` when it is not one).
    pub fn score_response(
        &self,
        entry: &InstructionEntry,
        model_response: &str,
    ) -> Result<Score, JudgeError> {
        let reply = self.query_model(&judge_prompt(entry, model_response))?;
        Ok(Score {
            value: parse_score(&reply),
            reply,
        })
    }

    /// The book's `generate_model_scores`: score every entry's
    /// `model_response`. Answers that are not an integer from 0 to 100 are
    /// counted as not scored (the book skips them too); an unreachable or
    /// misbehaving server stops at the first entry with its error.
    pub fn generate_model_scores(
        &self,
        entries: &[InstructionEntry],
        quiet: bool,
    ) -> Result<JudgeReport, JudgeError> {
        if let Some(index) = entries.iter().position(|e| e.model_response.is_none()) {
            return Err(JudgeError::NoResponse { index });
        }
        let mut bar = crate::progress::Progress::new("scoring", entries.len());
        if quiet {
            bar = bar.quiet();
        }
        let mut scores = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let response = entry.model_response.as_deref().unwrap_or_default();
            scores.push(self.score_response(entry, response)?);
            bar.set_position(i + 1);
        }
        if !quiet {
            bar.finish();
        }
        Ok(JudgeReport {
            model: self.model.clone(),
            scores,
        })
    }
}

/// The book's scoring prompt: the entry's prompt, its reference output and
/// the response to score.
pub fn judge_prompt(entry: &InstructionEntry, model_response: &str) -> String {
    format!(
        "Given the input `{}` and correct output `{}`, score the model response `{}` \
         on a scale from 0 to 100, where 100 is the best score. \
         Respond with the integer number only.",
        format_input(entry),
        entry.output,
        model_response
    )
}

/// An answer as a score: an integer from 0 to 100, surrounding white space
/// allowed (as Python's `int()` in the book).
///
/// ```
/// use llm_core::eval::ollama::parse_score;
/// assert_eq!(parse_score(" 85\n"), Some(85));
/// assert_eq!(parse_score("85/100"), None);
/// assert_eq!(parse_score("101"), None);
/// ```
pub fn parse_score(reply: &str) -> Option<u32> {
    reply.trim().parse::<u32>().ok().filter(|&s| s <= 100)
}

/// One judged response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Score {
    /// The score, when the answer was an integer from 0 to 100.
    pub value: Option<u32>,
    /// The judge's answer as it came.
    pub reply: String,
}

/// The scores of a test set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgeReport {
    /// The judging model.
    pub model: String,
    /// One per entry, in order.
    pub scores: Vec<Score>,
}

impl JudgeReport {
    /// How many answers were a score.
    pub fn num_scored(&self) -> usize {
        self.scores.iter().filter(|s| s.value.is_some()).count()
    }

    /// The mean of the scores (`None` when none could be read).
    pub fn average(&self) -> Option<f64> {
        let values: Vec<f64> = self
            .scores
            .iter()
            .filter_map(|s| s.value.map(f64::from))
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }
}

impl fmt::Display for JudgeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Judge: {}", self.model)?;
        writeln!(
            f,
            "Number of scores: {} of {}",
            self.num_scored(),
            self.scores.len()
        )?;
        match self.average() {
            Some(a) => write!(f, "Average score: {a:.2}"),
            None => write!(f, "Average score: none could be read"),
        }
    }
}
