//! `timens oci-hook`: time namespaces for OCI containers (runc, crun, podman via hooks.d).

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct HookArgs {
    /// The daemon's state directory.
    #[arg(long, default_value = timens_proto::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

pub fn hook(_args: HookArgs) -> ! {
    crate::die(1, "oci-hook: not implemented yet")
}
