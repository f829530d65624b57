//! The LLM-judge client against a stub HTTP server on 127.0.0.1 that speaks
//! Ollama's JSON: a good streamed answer, answers that are no score, a
//! malformed answer, a missing model, and no server at all.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;

use llm_core::eval::ollama::{judge_prompt, JudgeError, OllamaJudge};
use llm_core::finetune::instruct::InstructionEntry;
use serde_json::Value;

/// A stub server: answers each request with `answer(path, request body)` →
/// `(status, body)`, and records the request bodies.
fn stub<F>(answer: F) -> (String, Arc<Mutex<Vec<Value>>>)
where
    F: Fn(&str, &Value) -> (u16, String) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let mut length = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).unwrap();
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            log.lock().unwrap().push(json.clone());
            let (status, reply) = answer(&path, &json);
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                reply.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(reply.as_bytes()).unwrap();
        }
    });
    (url, seen)
}

/// Ollama's streamed chat answer: one JSON line per piece of the reply.
fn chat_stream(pieces: &[&str]) -> String {
    let mut out = String::new();
    for (i, p) in pieces.iter().enumerate() {
        let done = i + 1 == pieces.len();
        out.push_str(
            &serde_json::json!({"model": "llama3", "message": {"role": "assistant", "content": p}, "done": done})
                .to_string(),
        );
        out.push('\n');
    }
    out
}

fn entry(response: &str) -> InstructionEntry {
    let mut e = InstructionEntry::new(
        "Rewrite the sentence using a simile.",
        "The car is very fast.",
        "The car is as fast as lightning.",
    );
    e.model_response = Some(response.to_string());
    e
}

#[test]
fn good_answers_are_scored_and_the_request_is_the_books() {
    let (url, seen) = stub(|path, req| {
        assert_eq!(path, "/api/chat");
        let prompt = req["messages"][0]["content"].as_str().unwrap();
        let reply = if prompt.contains("lightning") && prompt.contains("as fast as a cheetah") {
            chat_stream(&["8", "5"])
        } else if prompt.contains("a bullet") {
            chat_stream(&["I would give it ", "60 points."])
        } else {
            chat_stream(&["\n20\n"])
        };
        (200, reply)
    });
    let judge = OllamaJudge::new("llama3").with_url(&url);
    assert_eq!(judge.query_model("What do Llamas eat?").unwrap(), "\n20\n");
    let entries = [
        entry("The car is as fast as a cheetah."),
        entry("The car is like a bullet."),
        entry("Fast car."),
    ];
    let report = judge.generate_model_scores(&entries, true).unwrap();
    let values: Vec<Option<u32>> = report.scores.iter().map(|s| s.value).collect();
    assert_eq!(values, [Some(85), None, Some(20)]);
    assert_eq!(report.scores[1].reply, "I would give it 60 points.");
    assert_eq!(report.num_scored(), 2);
    assert_eq!(report.average(), Some(52.5));
    assert_eq!(
        report.to_string(),
        "Judge: llama3\nNumber of scores: 2 of 3\nAverage score: 52.50"
    );
    // what the server was sent: the book's model, prompt and options
    let requests = seen.lock().unwrap();
    let first = &requests[1];
    assert_eq!(first["model"], "llama3");
    assert_eq!(first["messages"][0]["role"], "user");
    assert_eq!(
        first["messages"][0]["content"].as_str().unwrap(),
        judge_prompt(&entries[0], "The car is as fast as a cheetah.")
    );
    assert_eq!(
        first["options"],
        serde_json::json!({"seed": 123, "temperature": 0.0, "num_ctx": 2048})
    );
}

#[test]
fn the_server_lists_its_models() {
    let (url, _) = stub(|path, _| {
        assert_eq!(path, "/api/tags");
        (
            200,
            r#"{"models":[{"name":"llama3:latest"},{"name":"phi3:mini"}]}"#.to_string(),
        )
    });
    let judge = OllamaJudge::new("llama3").with_url(&url);
    assert_eq!(
        judge.check_if_running().unwrap(),
        ["llama3:latest", "phi3:mini"]
    );
}

#[test]
fn a_malformed_answer_is_an_error_naming_the_line() {
    let (url, _) = stub(|_, _| (200, format!("{}<html>busy</html>\n", chat_stream(&["4"]))));
    let judge = OllamaJudge::new("llama3").with_url(&url);
    let err = judge
        .generate_model_scores(&[entry("x")], true)
        .unwrap_err();
    assert!(
        matches!(err, JudgeError::Malformed { line: 2, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("/api/chat: line 2") && msg.contains("<html>busy</html>"),
        "{msg}"
    );

    let (url, _) = stub(|_, _| (200, "{\"done\": true}\n".to_string()));
    let err = OllamaJudge::new("llama3")
        .with_url(&url)
        .query_model("hi")
        .unwrap_err();
    assert!(err.to_string().contains("no message.content"), "{err}");

    let (url, _) = stub(|_, _| (200, String::new()));
    let err = OllamaJudge::new("llama3")
        .with_url(&url)
        .query_model("hi")
        .unwrap_err();
    assert!(err.to_string().contains("the answer is empty"), "{err}");
}

#[test]
fn a_missing_model_says_to_pull_it() {
    let (url, _) = stub(|_, _| {
        (
            404,
            r#"{"error":"model \"llama9\" not found, try pulling it first"}"#.to_string(),
        )
    });
    let err = OllamaJudge::new("llama9")
        .with_url(&url)
        .query_model("hi")
        .unwrap_err();
    assert!(
        matches!(err, JudgeError::Status { status: 404, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("not found") && msg.contains("ollama pull llama9"),
        "{msg}"
    );
}

#[test]
fn no_server_is_a_clear_error_not_a_crash() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener); // nothing listens there now
    let judge = OllamaJudge::new("llama3").with_url(&url);
    let err = judge
        .generate_model_scores(&[entry("a"), entry("b")], true)
        .unwrap_err();
    assert!(matches!(err, JudgeError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&url) && msg.contains("ollama serve") && msg.contains("ollama pull llama3"),
        "{msg}"
    );
    assert!(judge.check_if_running().is_err());
}

#[test]
fn entries_without_responses_are_refused_before_any_request() {
    let judge = OllamaJudge::new("llama3").with_url("http://127.0.0.1:9");
    let mut e = entry("x");
    e.model_response = None;
    let err = judge
        .generate_model_scores(&[entry("y"), e], true)
        .unwrap_err();
    assert!(
        matches!(err, JudgeError::NoResponse { index: 1 }),
        "{err:?}"
    );
}
