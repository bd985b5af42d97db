// How moetrain stops on SIGINT, SIGTERM and SIGHUP: no signal handler ever runs.
//
// A handler runs on whatever thread the kernel picks, on that thread's stack. oneDNN's JIT f32
// GEMM (Debian's 2.6, oneDNN issue #4845, fixed in 3.11.2) points rsp into a heap buffer while
// it runs, so a handler that interrupts it writes its signal frame over the heap: with a plain
// handler, Ctrl-C ended about one run in ten with "corrupted size vs. prev_size" and no
// checkpoint. So the stop signals are blocked in main before any other thread exists (OpenMP and
// oneDNN workers, spdlog, the watcher below inherit the mask), and one dedicated thread takes
// them with sigwait(). It only records the signal; the trainer polls stop_signal_received() at
// each step boundary, saves a checkpoint there and exits 130. A second stop signal ends the
// process at once with exit code 130, without saving: the newest complete checkpoint stays
// valid (checkpoints are atomic) and the unfinished temporary directory is removed at the next
// start.
#pragma once

namespace moe {

// Call first thing in main(), with main's argv, in place of prefer_passive_omp_wait (which it
// calls). Blocks SIGINT, SIGTERM and SIGHUP, re-executes the program once so that the threads
// that shared libraries start before main() (OpenBLAS's pool is created by its constructor)
// inherit the blocked mask too (a signal mask survives execve), then starts the thread that
// waits for the signals. Runtime error when the mask or the thread cannot be set up. If the
// re-exec fails (no /proc), it warns on stderr and goes on: such pre-main threads could then
// take a stop signal with its default action (the process ends without a checkpoint, but no
// handler ever runs).
void take_stop_signals_in_a_thread(char** argv);

// 0 until a stop signal arrived, then its number (the first one).
int stop_signal_received();

// For tests: forget a received signal.
void clear_stop_signal();

}  // namespace moe
