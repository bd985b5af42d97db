// How idle OpenMP threads wait, chosen for a process before its first parallel region.
//
// libgomp's default lets a thread that reaches the end of a parallel region spin for a while
// before it sleeps. A training step of the CPU backend runs several hundred short regions, so on
// a machine whose cores are shared with other work (a build, a second job) one thread of the pair
// is often descheduled and its partner spins through its whole time slice: at 2 threads on the
// 2-core development machine under load, moetrain spent 72% of its CPU time in libgomp's spin
// loop and ran 5x slower than with OMP_WAIT_POLICY=passive (docs/benchmarks.md). Passive waiting
// costs a futex wake per region, which is small against the step.
//
// libgomp reads its environment once, when it is loaded, so the policy can only be changed for
// the next program image: prefer_passive_omp_wait re-executes the running program with
// OMP_WAIT_POLICY=passive unless the user has chosen a policy (OMP_WAIT_POLICY or
// GOMP_SPINCOUNT set, to any value). Results never depend on the wait policy.
#pragma once

namespace moe {

// Call first thing in main(), before any OpenMP region runs, with main's argv. Returns normally
// when nothing is to be done or when the re-exec fails (the program then runs with the default).
void prefer_passive_omp_wait(char** argv);

// Replaces the running image by a fresh one of the same program file with the same argv (the
// path /proc/self/exe resolves to, so that the process keeps its name in ps and top). Returns
// only when the exec failed.
void reexec_self(char** argv);

}  // namespace moe
