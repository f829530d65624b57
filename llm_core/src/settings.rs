//! A notebook's tunable settings: one convention for every notebook.
//!
//! The first code cell after the `:dep` line creates a [`Settings`] and reads
//! every knob the notebook has (sizes, epochs, learning rate, seed, device)
//! through it. Each setting has a *full* value (what the book uses) and may
//! have a *smoke* value (tiny, used by the test suite to run every notebook in
//! seconds). Any setting can be overridden from the environment as
//! `LLM_<NAME>` (upper case), which is how the test suite shrinks the work
//! (`LLM_SMOKE=1`) and how you can experiment without editing a cell:
//!
//! ```text
//! LLM_NUM_EPOCHS=3 LLM_LEARNING_RATE=1e-3 make lab
//! ```
//!
//! Inside a notebook you can also simply edit the value in the cell and re-run.
//!
//! ```
//! use llm_core::Settings;
//!
//! let mut settings = Settings::from_env();
//! let num_epochs: i64 = settings.get_or_smoke("num_epochs", 10, 1);
//! let seed: i64 = settings.get("seed", 123);
//! assert!(num_epochs == 10 || num_epochs == 1 || std::env::var("LLM_NUM_EPOCHS").is_ok());
//! println!("{settings}"); // a table: name, value, where it came from
//! # let _ = seed;
//! ```

use std::fmt;
use std::str::FromStr;

use tch::Device;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The notebook's full (book) value.
    Default,
    /// The smoke value, because `LLM_SMOKE=1`.
    Smoke,
    /// An environment variable (its name).
    Env(String),
    /// A configuration file (its path), such as the `llm` tool's TOML file.
    File(String),
    /// A command-line flag (its spelling, such as `--learning-rate`).
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::Smoke => write!(f, "smoke"),
            Source::Env(var) => write!(f, "${var}"),
            Source::File(path) => write!(f, "{path}"),
            Source::Flag(flag) => write!(f, "{flag}"),
        }
    }
}

/// One recorded setting.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub value: String,
    pub source: Source,
}

/// The settings a notebook read, in the order it read them.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    smoke: bool,
    entries: Vec<Entry>,
    /// Values given by a file and by flags, `(name, value, source)`:
    /// flags above the environment, the file below it.
    file: Vec<(String, String, Source)>,
    flags: Vec<(String, String, Source)>,
}

/// The environment variable that overrides the setting `name`: `LLM_` + upper case.
pub fn env_var_name(name: &str) -> String {
    format!("LLM_{}", name.to_uppercase())
}

/// Read an on/off flag as people write it: `1`, `true`, `yes`, `on` or
/// `0`, `false`, `no`, `off` (any case; empty is off). Anything else is
/// `None`, never a silent "off".
///
/// ```
/// use llm_core::settings::parse_flag;
///
/// assert_eq!(parse_flag("ON"), Some(true));
/// assert_eq!(parse_flag("0"), Some(false));
/// assert_eq!(parse_flag("smoke"), None);
/// ```
pub fn parse_flag(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "" | "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Whether `LLM_SMOKE` asks for smoke settings ([`parse_flag`]; unset is
/// off), or an error naming the value when it is not a flag.
pub fn try_smoke_from_env() -> Result<bool, SettingError> {
    match std::env::var("LLM_SMOKE") {
        Err(_) => Ok(false),
        Ok(raw) => parse_flag(&raw).ok_or_else(|| SettingError {
            name: "smoke".to_string(),
            var: "environment variable LLM_SMOKE".to_string(),
            value: raw.clone(),
            ty: "flag",
            reason: "accepted: 1, true, yes, on (smoke run) or 0, false, no, off (full run)"
                .to_string(),
        }),
    }
}

/// True when `LLM_SMOKE` is `1`, `true`, `yes` or `on` (see [`parse_flag`]).
///
/// # Panics
/// If `LLM_SMOKE` is set to something else (such as `smoke`), with the
/// accepted values; [`try_smoke_from_env`] returns the error instead.
pub fn smoke_from_env() -> bool {
    try_smoke_from_env().unwrap_or_else(|e| panic!("{e}"))
}

/// Error for a setting whose environment variable does not parse.
#[derive(Debug, thiserror::Error)]
#[error("setting `{name}`: {var} = {value:?} is not a valid {ty}: {reason}")]
pub struct SettingError {
    pub name: String,
    /// Where the value came from (`environment variable LLM_SEED`, `flag --seed`, `run.toml: key seed`).
    pub var: String,
    pub value: String,
    pub ty: &'static str,
    pub reason: String,
}

impl Settings {
    /// Settings in smoke mode when `LLM_SMOKE=1`, else with the full values.
    ///
    /// # Panics
    /// If `LLM_SMOKE` is not an on/off flag ([`smoke_from_env`]).
    pub fn from_env() -> Self {
        Self::new(smoke_from_env())
    }

    /// Settings with smoke mode chosen explicitly (environment overrides still apply).
    pub fn new(smoke: bool) -> Self {
        Settings {
            smoke,
            ..Settings::default()
        }
    }

    /// Add values from a configuration file `path` (`(name, value)`), which
    /// the environment and flags override. The order of precedence, highest
    /// first: [`Settings::with_flags`], `LLM_<NAME>`, this file, the default.
    ///
    /// ```
    /// use llm_core::settings::{Settings, Source};
    ///
    /// let mut s = Settings::new(false)
    ///     .with_file("run.toml", [("num_epochs", "3"), ("seed", "7")])
    ///     .with_flags([("--seed", "seed", "9")]);
    /// assert_eq!(s.get("num_epochs", 10usize), 3);
    /// assert_eq!(s.get("seed", 123i64), 9);
    /// assert_eq!(s.entries()[1].source, Source::Flag("--seed".into()));
    /// assert!(s.unread().is_empty());
    /// ```
    pub fn with_file<I, K, V>(mut self, path: &str, values: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        for (k, v) in values {
            self.file
                .push((k.into(), v.into(), Source::File(path.to_string())));
        }
        self
    }

    /// Add values from command-line flags, `(flag, name, value)`, above
    /// everything else (see [`Settings::with_file`]).
    pub fn with_flags<I, F, K, V>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = (F, K, V)>,
        F: Into<String>,
        K: Into<String>,
        V: Into<String>,
    {
        for (flag, k, v) in values {
            self.flags
                .push((k.into(), v.into(), Source::Flag(flag.into())));
        }
        self
    }

    /// The file's and the flags' values that no `get` has read, with their
    /// source: misspelt or unknown names, once every setting has been read.
    pub fn unread(&self) -> Vec<(String, Source)> {
        self.flags
            .iter()
            .chain(&self.file)
            .filter(|(name, _, _)| !self.entries.iter().any(|e| &e.name == name))
            .map(|(name, _, source)| (name.clone(), source.clone()))
            .collect()
    }

    /// Whether the small smoke values are in use.
    pub fn is_smoke(&self) -> bool {
        self.smoke
    }

    /// The settings read so far.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// A setting that is the same in full and smoke runs.
    ///
    /// # Panics
    /// If `LLM_<NAME>` is set but does not parse as `T`; the message names the
    /// variable and the value. Use [`Settings::try_get_or_smoke`] to handle it.
    pub fn get<T>(&mut self, name: &str, value: T) -> T
    where
        T: FromStr + fmt::Display + Clone,
        T::Err: fmt::Display,
    {
        self.get_or_smoke(name, value.clone(), value)
    }

    /// A setting with a full value and a smaller smoke value.
    ///
    /// # Panics
    /// If `LLM_<NAME>` is set but does not parse as `T` (see [`Settings::get`]).
    pub fn get_or_smoke<T>(&mut self, name: &str, full: T, smoke: T) -> T
    where
        T: FromStr + fmt::Display,
        T::Err: fmt::Display,
    {
        match self.try_get_or_smoke(name, full, smoke) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Settings::get_or_smoke`], returning an error for a bad override.
    pub fn try_get_or_smoke<T>(&mut self, name: &str, full: T, smoke: T) -> Result<T, SettingError>
    where
        T: FromStr + fmt::Display,
        T::Err: fmt::Display,
    {
        let var = env_var_name(name);
        let given = |layer: &[(String, String, Source)]| {
            layer
                .iter()
                .rev()
                .find(|(n, _, _)| n == name)
                .map(|(_, v, source)| (v.clone(), source.clone()))
        };
        let raw = given(&self.flags)
            .or_else(|| {
                std::env::var(&var)
                    .ok()
                    .map(|v| (v, Source::Env(var.clone())))
            })
            .or_else(|| given(&self.file));
        let (value, source) = match raw {
            Some((raw, source)) => {
                let parsed = raw.trim().parse::<T>().map_err(|e| SettingError {
                    name: name.to_string(),
                    var: match &source {
                        Source::Env(v) => format!("environment variable {v}"),
                        Source::File(path) => format!("{path}: key {name}"),
                        Source::Flag(flag) => format!("flag {flag}"),
                        other => other.to_string(),
                    },
                    value: raw.clone(),
                    ty: std::any::type_name::<T>(),
                    reason: e.to_string(),
                })?;
                (parsed, source)
            }
            None if self.smoke => (smoke, Source::Smoke),
            None => (full, Source::Default),
        };
        self.record(name, value.to_string(), source);
        Ok(value)
    }

    /// The device to run on: setting `device` (`LLM_DEVICE`) is `auto` (CUDA
    /// when available, else CPU), `cpu`, `cuda` or `cuda:N`.
    ///
    /// # Panics
    /// If the value is not one of those, or CUDA is asked for but not available.
    pub fn device(&mut self) -> Device {
        self.try_device().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Settings::device`], returning an error for a bad value.
    pub fn try_device(&mut self) -> Result<Device, String> {
        let wanted: String = self.get("device", "auto".to_string());
        let d = parse_device(&wanted)?;
        if let Some(last) = self.entries.last_mut() {
            last.value = format!("{wanted} -> {d:?}");
        }
        Ok(d)
    }

    /// [`Settings::get`], returning an error for a bad override.
    pub fn try_get<T>(&mut self, name: &str, value: T) -> Result<T, SettingError>
    where
        T: FromStr + fmt::Display + Clone,
        T::Err: fmt::Display,
    {
        self.try_get_or_smoke(name, value.clone(), value)
    }

    fn record(&mut self, name: &str, value: String, source: Source) {
        self.entries.retain(|e| e.name != name);
        self.entries.push(Entry {
            name: name.to_string(),
            value,
            source,
        });
    }

    /// The settings as an HTML table (what Jupyter shows for a `Settings` value).
    pub fn to_html(&self) -> String {
        let mut rows = Vec::new();
        for e in &self.entries {
            rows.push(vec![e.name.clone(), e.value.clone(), e.source.to_string()]);
        }
        crate::display::html_table(&["setting", "value", "from"], &rows)
    }

    /// Rich display in the evcxr Jupyter kernel.
    pub fn evcxr_display(&self) {
        crate::display::Html(self.to_html()).evcxr_display();
    }
}

/// Load libtorch's CUDA library so that `tch::Cuda::is_available()` can see
/// a GPU; returns whether it loaded. Safe to call many times.
///
/// Our binaries link libtorch "as needed", so `libtorch_cuda.so` is dropped
/// from them (nothing calls into it directly) and CUDA would look absent even
/// on a GPU machine with the full torch wheel. On a CPU-only set-up the library
/// or its CUDA dependencies are missing, and this simply returns `false`.
pub fn init_cuda() -> bool {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOADED.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            use std::ffi::{c_char, c_int, c_void, CString};
            extern "C" {
                fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
            }
            const RTLD_NOW: c_int = 2;
            const RTLD_GLOBAL: c_int = 0x100;
            let mut candidates = vec!["libtorch_cuda.so".to_string()];
            if let Ok(dir) = std::env::var("LIBTORCH") {
                candidates.push(format!("{dir}/lib/libtorch_cuda.so"));
            }
            if let Some(dir) = option_env!("LLM_LIBTORCH_LIB") {
                candidates.push(format!("{dir}/libtorch_cuda.so"));
            }
            candidates.into_iter().any(|name| {
                let Ok(c) = CString::new(name) else {
                    return false;
                };
                // SAFETY: dlopen with a valid NUL-terminated path; the handle is
                // deliberately kept open for the life of the process.
                !unsafe { dlopen(c.as_ptr(), RTLD_NOW | RTLD_GLOBAL) }.is_null()
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    })
}

/// Parse `auto`, `cpu`, `cuda` or `cuda:N` into a device.
pub fn parse_device(s: &str) -> Result<Device, String> {
    init_cuda();
    let s = s.trim().to_ascii_lowercase();
    let cuda_ok = tch::Cuda::is_available();
    match s.as_str() {
        "auto" => Ok(if cuda_ok {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" if cuda_ok => Ok(Device::Cuda(0)),
        s if s.starts_with("cuda:") && cuda_ok => {
            let n: usize = s[5..]
                .parse()
                .map_err(|_| format!("device {s:?}: bad CUDA index"))?;
            if n >= tch::Cuda::device_count() as usize {
                return Err(format!(
                    "device {s:?}: only {} CUDA device(s) present",
                    tch::Cuda::device_count()
                ));
            }
            Ok(Device::Cuda(n))
        }
        s if s.starts_with("cuda") || s == "gpu" => Err(format!(
            "device {s:?} asked for, but CUDA is not available (libtorch sees no GPU; \
             on a GPU machine run the set-up with LLM_TORCH=cuda)"
        )),
        other => Err(format!(
            "device {other:?}: expected auto, cpu, cuda or cuda:N"
        )),
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self
            .entries
            .iter()
            .map(|e| e.name.len())
            .max()
            .unwrap_or(7)
            .max(7);
        let v = self
            .entries
            .iter()
            .map(|e| e.value.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(f, "{:<w$}  {:<v$}  from", "setting", "value")?;
        for e in &self.entries {
            writeln!(f, "{:<w$}  {:<v$}  {}", e.name, e.value, e.source)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_smoke_and_env_values() {
        let _rng = crate::rng_lock();
        let mut s = Settings::new(false);
        assert_eq!(s.get_or_smoke("test_settings_a", 10i64, 1), 10);
        let mut s2 = Settings::new(true);
        assert_eq!(s2.get_or_smoke("test_settings_a", 10i64, 1), 1);
        std::env::set_var("LLM_TEST_SETTINGS_B", "2.5e-4");
        assert_eq!(s.get_or_smoke("test_settings_b", 1.0f64, 0.5), 2.5e-4);
        assert_eq!(
            s.entries().last().unwrap().source,
            Source::Env("LLM_TEST_SETTINGS_B".into())
        );
        let table = s.to_string();
        assert!(table.contains("test_settings_a") && table.contains("$LLM_TEST_SETTINGS_B"));
    }

    #[test]
    fn bad_override_names_the_variable() {
        let _rng = crate::rng_lock();
        std::env::set_var("LLM_TEST_SETTINGS_C", "ten");
        let mut s = Settings::new(false);
        let err = s
            .try_get_or_smoke("test_settings_c", 10usize, 1)
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("LLM_TEST_SETTINGS_C") && msg.contains("\"ten\""),
            "{msg}"
        );
    }

    #[test]
    fn devices_parse() {
        let _rng = crate::rng_lock();
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").unwrap_err().contains("expected auto"));
        if !tch::Cuda::is_available() {
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
            assert!(parse_device("cuda").unwrap_err().contains("not available"));
        }
    }
}
