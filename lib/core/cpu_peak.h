// The theoretical f32 peak of the CPU this process runs on, for the MFU estimate of a CPU run.
//
// A fixed per-thread guess was wrong by more than 2x across the machines we run on (a Zen 5 core
// with full-width AVX-512 sustains more than the 100 GFLOP/s guess, so CPU runs printed MFU above
// 100%). The peak is derived instead: the widest f32 FMA vector the CPU supports (AVX-512F 16
// lanes, AVX2+FMA 8, AVX without FMA 8 with separate add and multiply, else SSE 4), two vector
// pipes per core, and the core clock. The clock is measured (a chain of dependent integer adds, one
// cycle each) because a virtual machine reports only its nominal clock: on the development VM the
// kernel says 2.60 GHz while the cores run at about 3.9 GHz, and a peak from the reported clock
// (166 GFLOP/s per core) was below an sgemm rate measured on the same kind of machine (222
// GFLOP/s). The larger of the measured and the reported clock is used.
//
// The result is an upper bound: a core that splits 512-bit operations over 256-bit pipes (Zen 4)
// or has one 512-bit FMA pipe reaches half of it, so MFU is understated there, never overstated.
#pragma once

#include <string>

namespace moe {

struct CpuPeak {
  double flops_per_second = 0;  // f32, for all `threads` together
  std::string basis;            // how it was derived, for the log ("2 threads x 64 FLOP/cycle ...")
};

// threads: the cores the run uses (one thread per core assumed). Takes about 50 ms (the clock).
CpuPeak estimate_cpu_peak(int threads);

// The highest core clock the kernel reports, in GHz: cpufreq's cpuinfo_max_freq when present,
// else the largest "cpu MHz" of /proc/cpuinfo; 0 when neither can be read.
double cpu_reported_clock_ghz();

// The clock of the calling thread's core while it is busy, in GHz, measured over a chain of
// dependent register adds (best of several ~5 ms rounds, so that a round the scheduler interrupts
// does not count); 0 where it cannot be measured (not x86-64).
double cpu_measured_clock_ghz();

}  // namespace moe
