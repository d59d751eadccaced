//! Ctrl-C and SIGTERM.

/// A command that must wind down itself on Ctrl-C (unmount first, say)
/// puts a sender here; the interrupt handler then only notifies it.
static INTERRUPT_HOOK: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>> =
    std::sync::Mutex::new(None);

/// Routes Ctrl-C and SIGTERM to the returned receiver until it is dropped
/// and [`clear_hook`] runs.
#[cfg_attr(not(feature = "fuse"), allow(dead_code))] // only `mount` needs it so far
pub(crate) fn take_interrupts() -> std::sync::mpsc::Receiver<()> {
    let (sender, receiver) = std::sync::mpsc::channel();
    *INTERRUPT_HOOK.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
    receiver
}

/// Restores the default interrupt behaviour.
#[cfg_attr(not(feature = "fuse"), allow(dead_code))]
pub(crate) fn clear_hook() {
    *INTERRUPT_HOOK.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Ctrl-C or SIGTERM: release our locks and leave with 130. Every write to
/// the repository is atomic, so stopping at any instant is safe; the next
/// run reuses what this one already indexed.
pub(crate) fn install_handler() {
    let _ = ctrlc::set_handler(|| {
        if let Some(hook) = INTERRUPT_HOOK
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            if hook.send(()).is_ok() {
                return;
            }
        }
        mapache_store::release_all_held();
        eprintln!("\ninterrupted");
        std::process::exit(crate::exit::INTERRUPTED as i32);
    });
}
