//! Bake libtorch's lib dir into the rpath of this crate's tests, examples and
//! benches, so `cargo test` and `cargo run --example` work without
//! LD_LIBRARY_PATH. torch-sys (`links = "tch"`) publishes the directory it
//! linked against as `cargo:libtorch_lib`, which Cargo exposes to direct
//! dependants as DEP_TCH_LIBTORCH_LIB.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        // for settings::init_cuda, which dlopens libtorch_cuda.so from here
        println!("cargo:rustc-env=LLM_LIBTORCH_LIB={dir}");
    }
}
