//! Build script of l3ns-dataplane. Does nothing unless the `dpdk` feature is on; then it finds
//! the system DPDK (>= 22.11) with pkg-config, compiles the C shim `csrc/l3ns_dpdk_shim.c`
//! (DPDK's burst and mbuf functions are `static inline`), and links DPDK's shared libraries.
//!
//! DPDK's poll-mode drivers are plugins: with a shared DPDK the EAL loads every driver of its
//! default plugin directory at `rte_eal_init` (Debian: `/usr/lib/x86_64-linux-gnu/dpdk/
//! pmds-23.0`), so nothing here has to pull the net drivers in. The directory found next to
//! libdpdk is exported as `L3NS_DPDK_PMD_DIR` for code that wants to pass `-d` explicitly.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_DPDK");
    if std::env::var_os("CARGO_FEATURE_DPDK").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=csrc/l3ns_dpdk_shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    // Libraries and search paths (emitted as cargo metadata by the probe). Shared linking:
    // only the libraries the shim and the Rust side call end up DT_NEEDED (--as-needed), and
    // the EAL dlopen()s the drivers.
    let lib = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!(
                "feature `dpdk` needs the system DPDK >= 22.11 visible to pkg-config \
                 (Debian: apt-get install libdpdk-dev pkg-config): {e}"
            )
        });

    // Compile flags exactly as DPDK states them (`-include rte_config.h`, `-march=...`: the
    // headers' inline functions depend on them).
    let cflags = pkg_config_output(&["--cflags", "libdpdk"]);
    let mut build = cc::Build::new();
    build
        .file("csrc/l3ns_dpdk_shim.c")
        .opt_level(3)
        .warnings(true);
    for flag in cflags.split_whitespace() {
        build.flag(flag);
    }
    for inc in &lib.include_paths {
        build.include(inc);
    }
    build.compile("l3ns_dpdk_shim");
    // The shim defines `munmap` (the guard of bursts against a driver unmapping memory from
    // the interrupt thread); this package's tests export it like l3nsd does (the drivers are
    // plugins and see only what the executable exports). Dependent packages with binaries
    // do the same in their build scripts.
    println!("cargo:rustc-link-arg=-Wl,--export-dynamic-symbol=munmap");

    if let Some(dir) = pmd_dir(&lib.link_paths) {
        println!("cargo:rustc-env=L3NS_DPDK_PMD_DIR={}", dir.display());
    }
}

fn pkg_config_output(args: &[&str]) -> String {
    let pc = std::env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let out = Command::new(&pc)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {pc} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{pc} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("pkg-config output is UTF-8")
}

/// `<libdir>/dpdk/pmds-<abi>` next to the libraries pkg-config named (the library directory
/// itself is often implicit, so the default multiarch directory is tried too).
fn pmd_dir(link_paths: &[PathBuf]) -> Option<PathBuf> {
    let libdir = pkg_config_output(&["--variable=libdir", "libdpdk"]);
    let mut candidates: Vec<PathBuf> = link_paths.to_vec();
    candidates.push(PathBuf::from(libdir.trim()));
    candidates.iter().find_map(|d| find_pmds(&d.join("dpdk")))
}

fn find_pmds(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("pmds-"))
        })
        .collect();
    found.sort();
    found.pop()
}
