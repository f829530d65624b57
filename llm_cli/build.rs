//! Bake libtorch's lib dir into the `llm` binary's rpath (as llm_core does
//! for its tests and examples), so `target/release/llm` runs without
//! LD_LIBRARY_PATH. torch-sys publishes the directory to direct dependants
//! as DEP_TCH_LIBTORCH_LIB.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let dir = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not publish its libtorch lib dir (DEP_TCH_LIBTORCH_LIB)");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
}
