//! `pause`: holds a pod's network namespace (and nothing else) for as long as the pod lives.
//!
//! The pod's app containers join this container's network namespace, which is how they
//! share one IP and reach each other on localhost. It sleeps until SIGTERM or SIGINT.

#![allow(unsafe_code)] // installing the signal handlers through libc's `signal`.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::SeqCst);
}

unsafe extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

fn main() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal(15, on_signal);
        signal(2, on_signal);
    }
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
