//! The committed shell completions and man page under `contrib/` are exactly what the `timens`
//! binary generates now: a changed flag or help text without `contrib/generate.sh` fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib")
}

/// `timens ARGS...`'s standard output; panics unless it exits 0.
fn generate(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_timens"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running timens {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "timens {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("generated output is UTF-8")
}

fn check(committed: &str, args: &[&str]) {
    let path = contrib().join(committed);
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let now = generate(args);
    if on_disk != now {
        let line = on_disk
            .lines()
            .zip(now.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || on_disk.lines().count().min(now.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "contrib/{committed} differs from `timens {}` (first at line {line}); \
             run contrib/generate.sh and commit the result",
            args.join(" ")
        );
    }
}

#[test]
fn bash_completion_is_current() {
    check("completions/timens.bash", &["completions", "bash"]);
}

#[test]
fn zsh_completion_is_current() {
    check("completions/_timens", &["completions", "zsh"]);
}

#[test]
fn fish_completion_is_current() {
    check("completions/timens.fish", &["completions", "fish"]);
}

#[test]
fn man_page_is_current() {
    check("man/timens.1", &["man"]);
}

/// The generators describe the real command line: every visible subcommand and each of its
/// long options appear, the hidden generator subcommands do not.
#[test]
fn generated_files_cover_the_command_line() {
    let help = generate(&["--help"]);
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|s| *s != "help")
        .collect();
    assert!(subcommands.contains(&"run"), "{help}");
    let man = generate(&["man"]);
    let bash = generate(&["completions", "bash"]);
    for sub in &subcommands {
        assert!(
            man.contains(&format!(".SS \"timens {sub}\"")),
            "{sub} in man"
        );
        assert!(bash.contains(&format!("timens,{sub})")), "{sub} in bash");
        let sub_help = generate(&[sub, "--help"]);
        for long in sub_help
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| w.trim_end_matches(|c: char| !c.is_alphanumeric()))
        {
            assert!(
                man.contains(&long.replace('-', "\\-")),
                "{sub} {long} in man"
            );
            assert!(bash.contains(long), "{sub} {long} in bash");
        }
    }
    for hidden in ["completions", "man"] {
        assert!(!bash.contains(&format!("timens,{hidden})")), "{hidden}");
        assert!(!man.contains(&format!("timens {hidden}")), "{hidden}");
    }
}
