//! `timens`: run commands in emulated time namespaces, and inspect them.

mod daemon;
mod gen;
mod mount;
mod oci;
mod offset;
mod overlay;
mod preload;
mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "timens",
    version,
    about = "Time namespaces in userspace: run a command with its own CLOCK_MONOTONIC and CLOCK_BOOTTIME"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run CMD as the first member of a new time namespace, with a /proc that shows it.
    Run(run::RunArgs),
    /// Attach the overlay to a running process's mount namespace (idempotent; after a daemon
    /// restart it restores a working /proc for the same namespace).
    Mount(mount::MountArgs),
    /// OCI runtime hook (createContainer and poststop): reads the container state on stdin.
    OciHook(oci::HookArgs),
    /// List every namespace the daemon knows.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The daemon's state directory.
        #[arg(long, default_value = timens_proto::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Print a shell completion script (contrib/generate.sh).
    #[command(hide = true)]
    Completions(gen::CompletionsArgs),
    /// Print the man page, roff (contrib/generate.sh).
    #[command(hide = true)]
    Man,
}

/// Exit status for a bad command line, as util-linux and clap use.
pub const EXIT_USAGE: i32 = 2;

pub fn die(code: i32, msg: impl std::fmt::Display) -> ! {
    eprintln!("timens: {msg}");
    std::process::exit(code)
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind::*;
            match e.kind() {
                DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
                _ => {
                    // One line naming the problem, not a usage dump.
                    // clap puts what is missing on the following lines; join them up to "Usage:".
                    let text = e.render().to_string();
                    let mut parts: Vec<&str> = Vec::new();
                    for line in text.lines() {
                        let line = line.trim();
                        if line.starts_with("Usage:") || line.starts_with("For more information") {
                            break;
                        }
                        if !line.is_empty() {
                            parts.push(line.trim_start_matches("error: "));
                        }
                    }
                    let msg = if parts.is_empty() {
                        "invalid command line".to_string()
                    } else {
                        parts.join(" ")
                    };
                    die(EXIT_USAGE, format!("{msg} (see 'timens --help')"));
                }
            }
        }
    };
    match cli.cmd {
        Cmd::Run(args) => run::run(args),
        Cmd::Mount(args) => mount::mount(args),
        Cmd::OciHook(args) => oci::hook(args),
        Cmd::Status { json, state_dir } => status(&state_dir, json),
        Cmd::Completions(args) => gen::completions(args),
        Cmd::Man => gen::man(),
    }
}

fn fmt_offset(o: &timens_proto::Offset) -> String {
    format!("{}.{:09}", o.sec, o.nsec)
}

fn status(state_dir: &std::path::Path, json: bool) {
    let sock = match daemon::connect(state_dir) {
        Ok(s) => s,
        Err(e) => die(
            1,
            format!(
                "no timensfs daemon answers at {}: {e}",
                timens_proto::socket_path(state_dir).display()
            ),
        ),
    };
    let namespaces = match timens_proto::call(&sock, &timens_proto::Request::Status, &[]) {
        Ok(timens_proto::Response::Status { namespaces }) => namespaces,
        Ok(other) => die(1, format!("unexpected answer from the daemon: {other:?}")),
        Err(e) => die(1, format!("asking the daemon for status: {e}")),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&namespaces).unwrap_or_default()
        );
        return;
    }
    println!(
        "{:<18} {:>22} {:>22} {:<6} {:>7} {:<6} SANDBOX",
        "NS", "MONOTONIC", "BOOTTIME", "FROZEN", "MEMBERS", "SERVED"
    );
    for ns in namespaces {
        println!(
            "{:<18} {:>22} {:>22} {:<6} {:>7} {:<6} {} (pid {})",
            procview::ns_link_text("time", ns.inum),
            fmt_offset(&ns.monotonic),
            fmt_offset(&ns.boottime),
            if ns.frozen { "yes" } else { "no" },
            ns.members,
            if ns.served { "yes" } else { "no" },
            ns.sandbox,
            ns.anchor_pid,
        );
    }
}
