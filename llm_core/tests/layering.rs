//! The crate reads in the book's order: no module uses one from a later
//! chapter, and no two modules use each other (directly or around a circle).
//! This test reads the sources (`crate::…` paths outside comments) and fails
//! naming the offending line.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Each module's place in the book: the ground floor first, then the chapters.
const LAYERS: &[(&str, u32)] = &[
    // the ground every chapter stands on
    ("settings", 0),
    ("display", 0),
    ("progress", 0),
    ("files", 0),
    ("rng", 0),
    ("distributed", 0),
    ("data", 0),
    ("plot", 0),
    // ch. 2
    ("text::tokenizer", 2),
    ("text::loader", 2),
    ("text::dataset", 2),
    ("text::shards", 2),
    // ch. 3 (the KV cache is its bonus)
    ("model::init", 3),
    ("model::lora", 3),
    ("model::linear", 3),
    ("model::kv_cache", 3),
    ("model::attention", 3),
    // ch. 4 (number formats: the speed recipe's bfloat16, used by the model)
    ("model::precision", 4),
    ("model::gpt", 4),
    // ch. 5 and appendix D
    ("model::generate", 5),
    ("model::gpt2_weights", 5),
    ("train::loss", 5),
    ("train::optim", 5),
    ("train::history", 5),
    ("train::pretrain", 5),
    ("train::checkpoint", 5),
    // bonus of ch. 5: the training-speed recipe
    ("train::speed", 5),
    // bonus of ch. 5: from GPT-2 to Llama 3 and Qwen3
    ("model::rms_norm", 5),
    ("model::rope", 5),
    ("model::swiglu", 5),
    ("model::gqa", 5),
    ("model::open_model", 5),
    ("model::hf_weights", 5),
    ("model::chat", 5),
    // ch. 6
    ("finetune::spam", 6),
    ("finetune::classifier", 6),
    // appendix E (used by chapters 6 and 7)
    ("finetune::lora", 6),
    // ch. 7
    ("finetune::instruct", 7),
    ("eval::metrics", 7),
    ("eval::ollama", 7),
    // ch. 7 bonus: preference tuning
    ("finetune::dpo", 7),
];

/// The module a `crate::…` path (or a source file's own path) belongs to.
fn module_of(path: &str) -> Option<&'static str> {
    LAYERS
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| path == *m || path.starts_with(&format!("{m}::")))
        .max_by_key(|m| m.len())
}

fn layer(module: &str) -> u32 {
    LAYERS.iter().find(|(m, _)| *m == module).unwrap().1
}

/// Every `.rs` file under `dir`, as (module path, file path).
fn sources(dir: &Path, prefix: &str, out: &mut Vec<(String, std::path::PathBuf)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let module = if prefix.is_empty() {
            stem.clone()
        } else {
            format!("{prefix}::{stem}")
        };
        if path.is_dir() {
            sources(&path, &module, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((module, path));
        }
    }
}

/// The `crate::…` paths a line uses, outside comments and string literals.
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    // the even-numbered pieces between double quotes are code
    code.split('"')
        .step_by(2)
        .flat_map(|piece| piece.split("crate::").skip(1))
        .map(|after| {
            let path: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            path.trim_end_matches(':').to_string()
        })
        .collect()
}

#[test]
fn no_module_uses_a_later_chapter_and_there_are_no_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, "", &mut files);
    let mut problems = Vec::new();
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (module, path) in &files {
        let module = module.trim_end_matches("::mod");
        if module == "lib" || !module.contains("::") && module_of(module).is_none() {
            // lib.rs and the folders' mod.rs only declare modules
            if module != "lib" && !["text", "model", "train", "finetune", "eval"].contains(&module)
            {
                problems.push(format!(
                    "{}: module {module} has no place in LAYERS (add it)",
                    path.display()
                ));
            }
            continue;
        }
        let Some(this) = module_of(module) else {
            problems.push(format!(
                "{}: module {module} has no place in LAYERS (add it)",
                path.display()
            ));
            continue;
        };
        let text = fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for used in crate_paths(line) {
                let Some(other) = module_of(&used) else {
                    continue; // crate::rng_lock and the like, from lib.rs
                };
                if other == this {
                    continue;
                }
                if layer(other) > layer(this) {
                    problems.push(format!(
                        "{}:{}: {this} (layer {}) uses crate::{used} from a later chapter (layer {})",
                        path.display(),
                        n + 1,
                        layer(this),
                        layer(other)
                    ));
                }
                let list = edges.entry(this).or_default();
                if !list.contains(&other) {
                    list.push(other);
                }
            }
        }
    }
    // cycles, through a depth-first search
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut Vec<&'a str>,
        problems: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|m| *m == node) {
            let mut circle: Vec<&str> = stack[at..].to_vec();
            circle.push(node);
            problems.push(format!("import cycle: {}", circle.join(" -> ")));
            return;
        }
        if done.contains(&node) {
            return;
        }
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, stack, done, problems);
        }
        stack.pop();
        done.push(node);
    }
    let mut done = Vec::new();
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "the layering is broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scanner_sees_uses_and_skips_comments_and_strings() {
    assert_eq!(
        crate_paths("use crate::model::gpt::{GptConfig}; crate::rng::randperm(3, 1)"),
        ["model::gpt", "rng::randperm"]
    );
    assert!(crate_paths("// see crate::train::pretrain").is_empty());
    assert!(crate_paths("let s = \"crate::eval\";").is_empty());
    assert_eq!(module_of("model::gpt::GptModel"), Some("model::gpt"));
    assert_eq!(
        module_of("text::tokenizer::bpe::X"),
        Some("text::tokenizer")
    );
}
