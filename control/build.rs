//! Build script of l3ns-control: with the `dpdk` feature, the binaries and tests export
//! `munmap`, which the DPDK shim defines (see `dataplane/csrc/l3ns_dpdk_shim.c`): DPDK's
//! drivers are plugins loaded at run time, and only a symbol the executable exports takes
//! precedence over libc's for them.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_DPDK");
    if std::env::var_os("CARGO_FEATURE_DPDK").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--export-dynamic-symbol=munmap");
    }
}
