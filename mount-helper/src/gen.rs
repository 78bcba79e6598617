//! `timens completions SHELL` and `timens man`: shell completions and the man page, generated
//! from the command-line definition itself so they can never drift from the real flags.
//!
//! Both subcommands are hidden; `contrib/generate.sh` runs them to refresh the committed files
//! under `contrib/`, and `tests/generated.rs` fails when those files differ from what the
//! binary prints now.

use clap::{Args, CommandFactory, ValueEnum};
use clap_mangen::roff::{bold, roman, Inline, Roff};
use std::io::{self, Write};

use crate::{die, Cli};

/// The shells `contrib/completions/` ships scripts for.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum)]
    shell: Shell,
}

/// The command as users see it: its visible subcommands only (clap's completion generators
/// would offer hidden ones too, and clap cannot remove a subcommand) and no `help` subcommand
/// (`--help` stays). Only the root is rebuilt; every subcommand is the real definition.
fn command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("timens")
        // What `#[command(version)]` on `Cli` expands to.
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(full.is_subcommand_required_set())
        .disable_help_subcommand(true)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    if let Some(about) = full.get_long_about() {
        cmd = cmd.long_about(about.clone());
    }
    cmd.build();
    cmd
}

pub fn completions(args: CompletionsArgs) -> ! {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "timens", &mut out);
    print_and_exit(&out)
}

pub fn man() -> ! {
    let mut out = Vec::new();
    if let Err(e) = render_man(&mut out) {
        die(1, format!("rendering the man page: {e}"));
    }
    print_and_exit(&out)
}

/// One page for `timens` and all its visible subcommands (they are small; one page is easier
/// to find than five). No date: the page must be reproducible byte for byte.
fn render_man(w: &mut Vec<u8>) -> io::Result<()> {
    let cmd = command();
    let page = clap_mangen::Man::new(cmd.clone()).title("TIMENS");
    let mut roff = Vec::new();
    page.render_title(&mut roff)?;
    page.render_name_section(&mut roff)?;
    page.render_synopsis_section(&mut roff)?;
    page.render_description_section(&mut roff)?;
    page.render_options_section(&mut roff)?;
    writeln!(roff, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands() {
        let name = format!("timens {}", sub.get_name());
        writeln!(roff, ".SS \"{name}\"")?;
        // The subcommand's own sections become paragraphs under its .SS heading.
        let sub_page = clap_mangen::Man::new(sub.clone().bin_name(&name));
        let mut body = Vec::new();
        sub_page.render_description_section(&mut body)?;
        sub_page.render_synopsis_section(&mut body)?;
        sub_page.render_options_section(&mut body)?;
        for line in String::from_utf8_lossy(&body).lines() {
            if line.starts_with(".SH") {
                writeln!(roff, ".PP")?;
            } else {
                writeln!(roff, "{line}")?;
            }
        }
    }
    reference_sections().to_writer(&mut roff)?;
    page.render_version_section(&mut roff)?;
    // Each render call starts with the same two-line string definition; keep the first.
    let mut seen = std::collections::HashSet::new();
    for line in String::from_utf8_lossy(&roff).lines() {
        let preamble = line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq");
        if !preamble || seen.insert(line.to_string()) {
            writeln!(w, "{line}")?;
        }
    }
    Ok(())
}

/// What clap does not know: files, environment, exit status. Built from the constants the code
/// uses, so a renamed file or variable changes the page (and fails `tests/generated.rs`).
fn reference_sections() -> Roff {
    let dir = timens_proto::DEFAULT_STATE_DIR;
    let mut r = Roff::new();
    fn item(r: &mut Roff, term: Inline, text: &str) {
        r.control("TP", []).text([term]).text([roman(text)]);
    }
    r.control("SH", ["FILES"]);
    for (name, what) in [
        (timens_proto::SOCKET_NAME, "the daemon's control socket"),
        (
            timens_proto::STORE_NAME,
            "the offset store (kept across daemon restarts)",
        ),
        (
            timens_proto::VIEWS_NAME,
            "each sandbox's view of the store, holding only its own namespaces (seen inside it as /proc/.timens/store)",
        ),
        (timens_proto::PIDFILE_NAME, "the daemon's pid"),
        (
            timens_proto::LOG_NAME,
            "the log of a daemon started on demand by timens",
        ),
    ] {
        item(&mut r, bold(format!("{dir}/{name}")), what);
    }
    for dir in ["/usr/local/lib/timensfs", "/usr/lib/timensfs"] {
        item(
            &mut r,
            bold(format!("{dir}/{}", crate::preload::LIB_NAME)),
            "the clock library, when there is none next to the timens executable",
        );
    }
    r.control("SH", ["ENVIRONMENT"]);
    item(
        &mut r,
        bold("TIMENS_PRELOAD_LIB"),
        "absolute path of the clock library, instead of the search above",
    );
    item(
        &mut r,
        bold("TIMENSFS_BIN"),
        "the daemon to start when none answers (default: timensfs next to timens, else from PATH)",
    );
    r.control("SH", ["EXIT STATUS"]);
    r.text([roman(format!(
        "timens run exits with the status of CMD (128+N when CMD is killed by signal N), \
         127 or 126 when CMD cannot be executed, {} for a bad command line, 1 when the sandbox \
         cannot be set up.",
        crate::EXIT_USAGE
    ))]);
    r.control("SH", ["SEE ALSO"]);
    r.text([roman(
        "unshare(1), time_namespaces(7), oci-hooks(5); timensfs --help for the daemon",
    )]);
    r
}

fn print_and_exit(bytes: &[u8]) -> ! {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        die(1, format!("writing to stdout: {e}"));
    }
    std::process::exit(0)
}
