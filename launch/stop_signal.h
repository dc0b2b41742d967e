// Graceful stop: SIGTERM, SIGUSR1 (Slurm's --signal=B:USR1@120 before the time limit) and SIGINT
// ask the trainer to finish its step, write a checkpoint and exit 0; running the same command
// again resumes. A second SIGINT ends the process at once.
#pragma once

namespace nt {

void install_stop_handlers();
// The signal number received, or 0.
int stop_requested();

}  // namespace nt
