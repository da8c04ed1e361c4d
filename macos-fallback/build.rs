//! On macOS, compiles the C hooks (`interpose/interpose.c`) into the injected library.
//! Elsewhere there is nothing to build: the portable modules are plain Rust.
fn main() {
    println!("cargo:rerun-if-changed=interpose/interpose.c");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("macos") {
        cc::Build::new()
            .file("interpose/interpose.c")
            .warnings(true)
            .compile("vt_interpose_hooks");
    }
}
