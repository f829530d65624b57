//! 1. Bake libtorch's lib dir into the rpath of this crate's tests, examples and
//!    benches, so `cargo test` and `cargo run --example` work without
//!    LD_LIBRARY_PATH. torch-sys (`links = "tch"`) publishes the directory it
//!    linked against as `cargo:libtorch_lib`, which Cargo exposes to direct
//!    dependants as DEP_TCH_LIBTORCH_LIB.
//! 2. Compile `csrc/*.cpp` (libtorch's generator state for `llm_core::rng`;
//!    PyTorch's exact AdamW step and `set_to_none` for `llm_core::optim`;
//!    autocast, TF32 and the fused AdamW kernel for `llm_core::train::speed`;
//!    c10d's TCPStore and Gloo process group for `llm_core::distributed`)
//!    against the headers next to that lib dir.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=csrc/rng_state.cpp");
    println!("cargo:rerun-if-changed=csrc/adamw.cpp");
    println!("cargo:rerun-if-changed=csrc/speed.cpp");
    println!("cargo:rerun-if-changed=csrc/distributed.cpp");
    println!("cargo:rerun-if-changed=csrc/gloo_decl");
    let dir = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not publish its libtorch lib dir (DEP_TCH_LIBTORCH_LIB)");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    // for settings::init_cuda, which dlopens libtorch_cuda.so from here
    println!("cargo:rustc-env=LLM_LIBTORCH_LIB={dir}");

    let include = PathBuf::from(&dir)
        .parent()
        .map(|p| p.join("include"))
        .filter(|p| p.join("ATen/Context.h").is_file())
        .unwrap_or_else(|| panic!("no libtorch headers (ATen/Context.h) in {dir}/../include"));
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/rng_state.cpp")
        .file("csrc/adamw.cpp")
        .file("csrc/speed.cpp")
        .compile("llm_aten_shim");
    // torch.distributed's C++ core (c10d) with Gloo; gloo's own headers are
    // not in the wheel: csrc/gloo_decl declares the types c10d names
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include("csrc/gloo_decl")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag("-DUSE_C10D_GLOO")
        .file("csrc/distributed.cpp")
        .compile("llm_c10d_shim");
}
