//! The kernel's WireGuard, configured over its generic-netlink family: **not written yet**.
//! [`Kernel::up`] fails, and [`super::Vpns::start`] refuses `backend = "kernel"` at start, so
//! nothing ever believes a kernel tunnel is up. What is here is the probe `auto` logs with.

/// Whether this kernel has WireGuard (the module loaded or built in).
pub fn available() -> bool {
    std::path::Path::new("/sys/module/wireguard").exists()
}

/// A kernel WireGuard interface (never made yet: see the module documentation).
#[derive(Debug)]
pub struct Kernel;

impl Kernel {
    pub fn up(&self) -> Result<(), String> {
        Err(super::VpnError::KernelNotImplemented.to_string())
    }
}
