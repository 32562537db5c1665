//! Compiles the C eBPF program(s) in `bpf/` with clang (Rust eBPF needs a nightly toolchain we
//! do not have). The object is embedded into the crate with `include_bytes_aligned!`.

use std::{env, path::PathBuf, process::Command};

const PROGRAMS: &[&str] = &["filter"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("NIGHTCAP_CLANG").unwrap_or_else(|_| "clang".to_owned());
    println!("cargo:rerun-if-env-changed=NIGHTCAP_CLANG");
    let arch_include = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "/usr/include/aarch64-linux-gnu",
        _ => "/usr/include/x86_64-linux-gnu",
    };
    for name in PROGRAMS {
        let src = format!("bpf/{name}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let obj = out.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I{arch_include}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("clang failed to compile {src} ({s}); see the errors above"),
            Err(e) => panic!(
                "cannot run {clang:?} to compile {src}: {e}. Install clang, llvm and libbpf-dev \
                 (apt-get install clang llvm libbpf-dev) or set NIGHTCAP_CLANG to a clang binary"
            ),
        }
    }
}
