//! Settings from a TOML file, `LLM_*` variables and flags, through
//! `llm_core::Settings` (the notebooks' convention), and the resolved
//! configuration a run writes beside its checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use llm_core::settings::{Settings, Source};

/// The flags every configurable subcommand has.
#[derive(Args, Debug, Clone, Default)]
pub struct Common {
    /// A TOML file of settings, keys as in the notebooks (`learning_rate = 4e-4`)
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Set any setting, above the file and LLM_* variables (repeatable)
    #[arg(short = 's', long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Print the resolved settings (and the model's size) and exit without running
    #[arg(long)]
    pub dry_run: bool,
}

/// One typed flag as a setting: `(flag, setting name, value if given)`.
pub type Flag = (&'static str, &'static str, Option<String>);

/// `flag!("--num-epochs", "num_epochs", args.num_epochs)`.
macro_rules! flag {
    ($flag:expr, $name:expr, $value:expr) => {
        ($flag, $name, $value.as_ref().map(|v| v.to_string()))
    };
}
pub(crate) use flag;

/// Read a TOML file into `(name, value)` pairs: strings as they are,
/// numbers and booleans as written, arrays joined with commas.
pub fn read_toml(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the configuration file", path.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        // one line: the place and toml's own message, without its snippet
        let at = e.span().map_or(String::new(), |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        });
        anyhow::anyhow!(
            "{}: not valid TOML{at}: {}",
            path.display(),
            e.message().trim()
        )
    })?;
    let mut out = Vec::new();
    for (key, value) in table {
        let text = match &value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                value.to_string()
            }
            toml::Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => bail!(
                "{}: key `{key}` is a {}; settings are flat `name = value` pairs",
                path.display(),
                other.type_str()
            ),
        };
        out.push((key, text));
    }
    Ok(out)
}

/// The settings of one run: `files` (a resumed run's saved configuration,
/// then `--config`), `LLM_*` variables, then the typed flags and `--set`.
pub fn settings(common: &Common, files: &[PathBuf], flags: Vec<Flag>) -> Result<Settings> {
    let mut settings = Settings::new(false);
    for path in files.iter().chain(&common.config) {
        settings = settings.with_file(&path.display().to_string(), read_toml(path)?);
    }
    let mut given: Vec<(String, String, String)> = flags
        .into_iter()
        .filter_map(|(f, n, v)| v.map(|v| (f.to_string(), n.to_string(), v)))
        .collect();
    for s in &common.set {
        let Some((name, value)) = s.split_once('=') else {
            bail!("--set {s:?}: expected NAME=VALUE, such as --set learning_rate=1e-3");
        };
        given.push((
            format!("--set {name}"),
            name.trim().to_string(),
            value.to_string(),
        ));
    }
    Ok(settings.with_flags(given))
}

/// After a subcommand has read every setting it knows: an error for each
/// name in the file or flags that it did not read (a typo, or a setting of
/// another subcommand), listing the ones it reads.
pub fn check_unread(settings: &Settings, command: &str) -> Result<()> {
    let unread = settings.unread();
    if let Some((name, source)) = unread.first() {
        let known: Vec<&str> = settings.entries().iter().map(|e| e.name.as_str()).collect();
        let place = match source {
            Source::File(path) => format!("{path}: "),
            Source::Flag(flag) => format!("{flag}: "),
            _ => String::new(),
        };
        bail!(
            "{place}unknown setting `{name}` for `llm {command}`; it reads: {}",
            known.join(", ")
        );
    }
    Ok(())
}

/// The resolved settings as TOML (what `config.toml` of a run holds, and
/// what `--resume` reads back).
pub fn to_toml(settings: &Settings, command: &str) -> String {
    let mut out = format!(
        "# The resolved settings of `llm {command}`, written when the run started.\n\
         # `llm {command} --resume <this directory>` reads them back.\n"
    );
    for e in settings.entries() {
        let bare = e.value.parse::<f64>().is_ok_and(f64::is_finite)
            && !e.value.contains(['_', 'x'])
            || e.value == "true"
            || e.value == "false";
        let value = if bare {
            e.value.clone()
        } else {
            toml::Value::String(e.value.clone()).to_string()
        };
        out.push_str(&format!("{} = {value}\n", e.name));
    }
    out
}

/// Print the resolved settings (what a run starts with, or `--dry-run` shows).
pub fn print(settings: &Settings) {
    println!("{settings}");
}

/// The device setting (`auto`, `cpu`, `cuda`, `cuda:N`), read as text so
/// that the saved configuration keeps what was asked for.
pub fn device(settings: &mut Settings) -> Result<llm_core::tch::Device> {
    let wanted: String = settings.try_get("device", "auto".to_string())?;
    llm_core::settings::init_cuda();
    llm_core::settings::parse_device(&wanted).map_err(|e| anyhow::anyhow!("setting `device`: {e}"))
}
